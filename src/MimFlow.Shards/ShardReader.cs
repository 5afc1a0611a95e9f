using System.Runtime.CompilerServices;
using MimFlow.Core.IO;
using Parquet;
using Parquet.Schema;

namespace MimFlow.Shards;

/// <summary>Streams the rows of one shard file, one row group at a time (memory: one group).</summary>
public static class ShardReader
{
    /// <summary>The optional columns a shard file has, read from its schema.</summary>
    public static ShardColumns ColumnsOf(ParquetSchema schema)
    {
        var names = schema.Fields.Select(f => f.Name).ToHashSet(StringComparer.Ordinal);
        FeatureEncoding? features = names.Contains("features") ? names.Contains("feature_scales") ? FeatureEncoding.Int8 : FeatureEncoding.Fp16 : null;
        return new ShardColumns(names.Contains("codes"), features, names.Contains("image"), names.Contains("label_map"));
    }

    public static IAsyncEnumerable<ShardRow> ReadAsync(string path, CancellationToken cancellationToken = default) => ReadAsync(path, null, cancellationToken);

    /// <summary>
    /// The rows of a shard, one row group at a time. Each group is one retriable read (<paramref name="io"/>): after a
    /// transient I/O error the file is opened again and the group read again from its start, so the rows come out
    /// exactly once, in order, as without the error.
    /// </summary>
    public static async IAsyncEnumerable<ShardRow> ReadAsync(string path, TransientIo? io, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        io ??= new TransientIo();
        await using var shard = new OpenShard(path, io.Files);
        var reader = await io.RunAsync(path, "reading the footer", (_, token) => shard.ReopenAsync(token), cancellationToken);
        var schema = new ShardSchema(ColumnsOf(reader.Schema));
        var expected = schema.ColumnNames;
        var actual = reader.Schema.Fields.Select(f => f.Name).ToList();
        if (!expected.SequenceEqual(actual))
            throw new InvalidDataException($"{path}: columns [{string.Join(", ", actual)}] are not a shard schema (expected [{string.Join(", ", expected)}])");
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            int group = g;
            var rows = await io.RunAsync(path, $"reading row group {group}", async (attempt, token) =>
            {
                var current = attempt == 0 ? shard.Reader! : await shard.ReopenAsync(token);
                return await Named(path, $"row group {group}", () => ReadGroupAsync(current, schema, group, path, token));
            }, cancellationToken);
            foreach (var row in rows) yield return row;
        }
    }

    public static IAsyncEnumerable<string> ReadPathsAsync(string path, CancellationToken cancellationToken = default) => ReadPathsAsync(path, null, cancellationToken);

    /// <summary>The <c>path</c> column alone, row by row (a cheap pass over a set: no codes, features or images are read);
    /// retried per row group as <see cref="ReadAsync(string, TransientIo?, CancellationToken)"/>.</summary>
    public static async IAsyncEnumerable<string> ReadPathsAsync(string path, TransientIo? io, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        io ??= new TransientIo();
        await using var shard = new OpenShard(path, io.Files);
        var reader = await io.RunAsync(path, "reading the footer", (_, token) => shard.ReopenAsync(token), cancellationToken);
        var schema = new ShardSchema(ColumnsOf(reader.Schema));
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            int group = g;
            var values = await io.RunAsync(path, $"reading row group {group}", async (attempt, token) =>
            {
                var current = attempt == 0 ? shard.Reader! : await shard.ReopenAsync(token);
                return await Named(path, $"row group {group}", async () =>
                {
                    using var rowGroup = current.OpenRowGroupReader(group);
                    return await Strings(rowGroup, schema.PathField, checked((int)rowGroup.RowCount), token);
                });
            }, cancellationToken);
            foreach (string value in values) yield return value;
        }
    }

    /// <summary>A shard file and its Parquet reader, opened again from scratch after an I/O error.</summary>
    private sealed class OpenShard(string path, IFileOpener files) : IAsyncDisposable
    {
        private Stream? stream;

        public ParquetReader? Reader { get; private set; }

        public async Task<ParquetReader> ReopenAsync(CancellationToken cancellationToken)
        {
            await DisposeAsync();
            stream = files.OpenRead(path);
            Reader = await OpenAsync(stream, path, cancellationToken);
            return Reader;
        }

        public async ValueTask DisposeAsync()
        {
            var (reader, open) = (Reader, stream);
            (Reader, stream) = (null, null);
            try
            {
                if (reader is not null) await reader.DisposeAsync();
                if (open is not null) await open.DisposeAsync();
            }
            catch (IOException)
            {
                // Closing a reader of a file that just failed may fail too; the next open starts afresh either way.
            }
        }
    }

    /// <summary>The Parquet reader of a shard; a file that is not Parquet (truncated, garbage) is refused naming it.</summary>
    public static Task<ParquetReader> OpenAsync(Stream stream, string path, CancellationToken cancellationToken = default) =>
        Named(path, "footer", async () =>
        {
            var reader = await ParquetReader.CreateAsync(stream, null, leaveStreamOpen: false, cancellationToken);
            try
            {
                // The schema decodes lazily: decode it here, so a damaged one is refused with the footer.
                _ = reader.Schema.GetDataFields();
                return reader;
            }
            catch
            {
                await reader.DisposeAsync();
                throw;
            }
        });

    private static async Task<ShardRow[]> ReadGroupAsync(ParquetReader reader, ShardSchema schema, int g, string path, CancellationToken cancellationToken)
    {
        using var group = reader.OpenRowGroupReader(g);
        int count = checked((int)group.RowCount);
        var ids = await Strings(group, schema.SampleId, count, cancellationToken);
        var paths = await Strings(group, schema.PathField, count, cancellationToken);
        var labels = await Labels(group, reader.Schema, count, path, cancellationToken);
        var views = await Values<int>(group, schema.View, count, cancellationToken);
        var augment = await Strings(group, schema.Augment, count, cancellationToken);
        var widths = await Values<int>(group, schema.SourceWidth, count, cancellationToken);
        var heights = await Values<int>(group, schema.SourceHeight, count, cancellationToken);
        var codes = schema.Columns.Codes ? await CodeLists(group, schema, count, path, cancellationToken) : null;
        var features = schema.Columns.Features is not null ? await Blobs(group, schema.Features, count, cancellationToken) : null;
        var scales = schema.Columns.Features == FeatureEncoding.Int8 ? await Blobs(group, schema.FeatureScales, count, cancellationToken) : null;
        var images = schema.Columns.Image ? await Blobs(group, schema.Image, count, cancellationToken) : null;
        var maps = schema.Columns.LabelMap ? await Blobs(group, schema.LabelMap, count, cancellationToken) : null;
        var rows = new ShardRow[count];
        for (int i = 0; i < count; i++)
            rows[i] = new ShardRow(ids[i], paths[i], labels[i], views[i], augment[i], widths[i], heights[i],
                codes?[i], features?[i], scales?[i], images?[i], maps?[i]);
        return rows;
    }

    /// <summary>Runs a read of <paramref name="path"/>; whatever the Parquet or compression library throws becomes one
    /// error naming the file and the part being read (not a bare "not a parquet file" or a zstd error).</summary>
    private static async Task<T> Named<T>(string path, string part, Func<Task<T>> read)
    {
        try
        {
            return await read();
        }
        catch (Exception e) when (TransientIo.TransientCause(e) is { } cause && cause != e)
        {
            // A transient I/O error the Parquet library wrapped: let the retry see it as what it is.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
            throw;
        }
        catch (Exception e) when (e is not (OperationCanceledException or InvalidDataException or UnauthorizedAccessException or FileNotFoundException or DirectoryNotFoundException)
                                  && !TransientIo.IsTransient(e) && e is not NotARegularFileException)
        {
            throw new InvalidDataException($"{path}: not a readable shard ({part}: {e.GetType().Name}: {e.Message.Split('\n')[0]})", e);
        }
    }

    /// <summary>The label column as the file stores it: int64 (the current format) or int32 (sets written before the
    /// shards described themselves to Hugging Face <c>datasets</c>, whose ClassLabel is int64).</summary>
    private static async Task<int?[]> Labels(ParquetRowGroupReader group, ParquetSchema schema, int count, string path, CancellationToken cancellationToken)
    {
        var field = schema.DataFields.FirstOrDefault(f => f.Name == "label") ?? throw new InvalidDataException($"{path}: no label column");
        var labels = new int?[count];
        if (field.ClrType == typeof(int))
        {
            await group.ReadAsync<int>(field, labels, null, cancellationToken);
            return labels;
        }
        if (field.ClrType != typeof(long)) throw new InvalidDataException($"{path}: the label column is {field.ClrType.Name}, not int64 (or int32)");
        var wide = new long?[count];
        await group.ReadAsync<long>(field, wide, null, cancellationToken);
        for (int i = 0; i < count; i++)
        {
            if (wide[i] is not long value) continue;
            if (value is < -1 or > int.MaxValue) throw new InvalidDataException($"{path}: label {value} in row {i} of a row group is outside 0..{int.MaxValue}");
            labels[i] = (int)value;
        }
        return labels;
    }

    private static async Task<string[]> Strings(ParquetRowGroupReader group, DataField field, int count, CancellationToken cancellationToken)
    {
        var values = new string[count];
        await group.ReadAsync(field, values, null, cancellationToken);
        return values;
    }

    private static async Task<byte[][]> Blobs(ParquetRowGroupReader group, DataField field, int count, CancellationToken cancellationToken)
    {
        var values = new byte[count][];
        await group.ReadAsync(field, values, null, cancellationToken);
        return values;
    }

    private static async Task<T[]> Values<T>(ParquetRowGroupReader group, DataField field, int count, CancellationToken cancellationToken) where T : struct
    {
        var values = new T[count];
        await group.ReadAsync<T>(field, values, null, cancellationToken);
        return values;
    }

    private static async Task<short[][]> CodeLists(ParquetRowGroupReader group, ShardSchema schema, int count, string path, CancellationToken cancellationToken)
    {
        long total = group.GetMetadata(schema.CodeValues)?.MetaData?.NumValues ?? throw new InvalidDataException($"{path}: no metadata for the codes column");
        var values = new short[total];
        var definition = new int[total];
        var repetition = new int[total];
        await group.ReadRawAsync<short>(schema.CodeValues, values, definition, repetition, cancellationToken);
        var lists = new short[count][];
        int row = -1, start = 0;
        for (int i = 0; i <= total; i++)
        {
            if (i < total && repetition[i] != 0) continue;
            if (row >= 0) lists[row] = values[start..i];
            if (i == total) break;
            if (definition[i] != schema.CodeValues.MaxDefinitionLevel) throw new InvalidDataException($"{path}: a row with a null or empty code list");
            row++;
            start = i;
        }
        if (row != count - 1) throw new InvalidDataException($"{path}: {row + 1} code lists for {count} rows");
        return lists;
    }
}
