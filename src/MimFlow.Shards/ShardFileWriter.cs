using System.Security.Cryptography;
using MimFlow.Core.IO;
using Parquet;

namespace MimFlow.Shards;

/// <summary>What a finished shard file is: its name in the shard folder, rows, bytes and SHA-256 (lower-case hex).</summary>
public sealed record ShardFile(string Name, long Rows, long Bytes, string Sha256);

/// <summary>
/// Writes one shard: rows arrive in row groups into a hidden temporary file beside the final name (zstd); <see
/// cref="CompleteAsync"/> flushes it to disk and renames it, so a shard exists under its final name only whole.
/// </summary>
public sealed class ShardFileWriter : IAsyncDisposable
{
    private readonly ShardSchema schema;
    private readonly string finalPath;
    private readonly string temporaryPath;
    private readonly Stream stream;
    private readonly ParquetWriter writer;
    private long rows;
    private bool completed;
    private bool parquetClosed;

    private ShardFileWriter(ShardSchema schema, string finalPath, string temporaryPath, Stream stream, ParquetWriter writer)
    {
        this.schema = schema;
        this.finalPath = finalPath;
        this.temporaryPath = temporaryPath;
        this.stream = stream;
        this.writer = writer;
    }

    public static Task<ShardFileWriter> CreateAsync(ShardSchema schema, string finalPath, CancellationToken cancellationToken) =>
        CreateAsync(schema, finalPath, null, cancellationToken);

    /// <param name="files">Opens the temporary file (default: the file system).</param>
    public static async Task<ShardFileWriter> CreateAsync(ShardSchema schema, string finalPath, IFileOpener? files, CancellationToken cancellationToken)
    {
        string temporary = AtomicFile.TemporaryNameFor(finalPath);
        var stream = (files ?? FileOpener.Instance).CreateNew(temporary);
        try
        {
            var options = new ParquetOptions { CompressionMethod = CompressionMethod.Zstd };
            var writer = await ParquetWriter.CreateAsync(schema.Parquet, stream, options, append: false, cancellationToken);
            if (schema.KeyValueMetadata.Count > 0) writer.CustomMetadata = schema.KeyValueMetadata.ToDictionary();
            return new ShardFileWriter(schema, finalPath, temporary, stream, writer);
        }
        catch
        {
            await stream.DisposeAsync();
            File.Delete(temporary);
            throw;
        }
    }

    public long Rows => rows;

    /// <summary>Bytes written so far (row groups are written whole, so this grows by one group at a time).</summary>
    public long BytesWritten => stream.Position;

    public async Task WriteRowGroupAsync(IReadOnlyList<ShardRow> group, CancellationToken cancellationToken)
    {
        if (group.Count == 0) return;
        using var rowGroup = writer.CreateRowGroup();
        await rowGroup.WriteAsync(schema.SampleId, group.Select(r => r.SampleId).ToArray(), null);
        await rowGroup.WriteAsync(schema.PathField, group.Select(r => r.Path).ToArray(), null);
        await WriteNullableAsync(rowGroup, schema.Label, group.Select(r => (long?)r.Label).ToArray(), cancellationToken);
        await rowGroup.WriteAsync<int>(schema.View, group.Select(r => r.View).ToArray().AsMemory(), null, null, cancellationToken);
        await rowGroup.WriteAsync(schema.Augment, group.Select(r => r.Augment).ToArray(), null);
        await rowGroup.WriteAsync<int>(schema.SourceWidth, group.Select(r => r.SourceWidth).ToArray().AsMemory(), null, null, cancellationToken);
        await rowGroup.WriteAsync<int>(schema.SourceHeight, group.Select(r => r.SourceHeight).ToArray().AsMemory(), null, null, cancellationToken);
        if (schema.Columns.Codes) await WriteCodesAsync(rowGroup, group, cancellationToken);
        if (schema.Columns.Features is FeatureEncoding encoding)
        {
            await rowGroup.WriteAsync(schema.Features, group.Select(r => Required(r.Features, "features")).ToArray(), null);
            if (encoding == FeatureEncoding.Int8)
                await rowGroup.WriteAsync(schema.FeatureScales, group.Select(r => Required(r.FeatureScales, "feature_scales")).ToArray(), null);
        }
        if (schema.Columns.Image) await rowGroup.WriteAsync(schema.Image, group.Select(r => Required(r.Image, "image")).ToArray(), null);
        if (schema.Columns.LabelMap) await rowGroup.WriteAsync(schema.LabelMap, group.Select(r => Required(r.LabelMap, "label_map")).ToArray(), null);
        rowGroup.CompleteValidate();
        rows += group.Count;
    }

    /// <summary>
    /// Closes the file, flushes it to disk, publishes it under its final name and describes it. Not cancellable once
    /// begun: it is short, and stopping between the footer and the rename would only waste the shard.
    /// </summary>
    public async Task<ShardFile> CompleteAsync()
    {
        parquetClosed = true;
        await writer.DisposeAsync();
        await stream.FlushAsync();
        if (stream is FileStream file) file.Flush(flushToDisk: true);
        stream.Position = 0;
        string sha256 = Convert.ToHexStringLower(await SHA256.HashDataAsync(stream));
        long bytes = stream.Length;
        await stream.DisposeAsync();
        File.Move(temporaryPath, finalPath, overwrite: true);
        completed = true;
        return new ShardFile(Path.GetFileName(finalPath), rows, bytes, sha256);
    }

    public async ValueTask DisposeAsync()
    {
        if (completed) return;
        if (!parquetClosed)
        {
            parquetClosed = true;
            try { await writer.DisposeAsync(); }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException) { }
        }
        try
        {
            await stream.DisposeAsync();
        }
        catch (IOException)
        {
            // The stream of a failed write may fail to close as well; the file is deleted all the same.
        }
        File.Delete(temporaryPath);
    }

    private async Task WriteCodesAsync(ParquetRowGroupWriter rowGroup, IReadOnlyList<ShardRow> group, CancellationToken cancellationToken)
    {
        int total = group.Sum(r => Required(r.Codes, "codes").Length);
        var values = new short[total];
        var repetition = new int[total];
        var definition = new int[total];
        int at = 0;
        foreach (var row in group)
        {
            if (row.Codes!.Length == 0) throw new InvalidDataException($"{row.Path}: an empty code list");
            row.Codes.CopyTo(values, at);
            for (int i = 0; i < row.Codes.Length; i++) repetition[at + i] = i == 0 ? 0 : 1;
            at += row.Codes.Length;
        }
        Array.Fill(definition, schema.CodeValues.MaxDefinitionLevel);
        await rowGroup.WriteAllPartsAsync<short>(schema.CodeValues, values, definition, repetition, cancellationToken);
    }

    private static async Task WriteNullableAsync(ParquetRowGroupWriter rowGroup, Parquet.Schema.DataField field, long?[] values, CancellationToken cancellationToken)
    {
        long[] defined = values.Where(v => v.HasValue).Select(v => v!.Value).ToArray();
        int[] definition = values.Select(v => v.HasValue ? field.MaxDefinitionLevel : 0).ToArray();
        await rowGroup.WriteAllPartsAsync<long>(field, defined, definition, null, cancellationToken);
    }

    private static T Required<T>(T? value, string column) where T : class =>
        value ?? throw new InvalidOperationException($"a row without {column}, which this shard set stores");
}
