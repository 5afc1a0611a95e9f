using System.Formats.Tar;
using System.Text;
using MimFlow.Core.IO;
using MimFlow.Data.Sources;
using Parquet;
using Parquet.Schema;

namespace MimFlow.Data.Packing;

/// <summary>One shard being written to a hidden temporary file beside its final place; the packer renames it when the
/// whole split is done, so a failed or cancelled pack leaves no shard under a final name.</summary>
internal interface IShardWriter : IAsyncDisposable
{
    string TemporaryPath { get; }

    /// <summary>Bytes of the shard so far (including rows still buffered for a row group).</summary>
    long Bytes { get; }

    ValueTask AddAsync(PackSample sample, CancellationToken cancellationToken);

    /// <summary>Finishes the file and flushes it to disk (it stays under its temporary name).</summary>
    ValueTask CompleteAsync(CancellationToken cancellationToken);
}

/// <summary>
/// The temporary file under a format's writer. Completing finishes the format, then flushes the file to disk before
/// the packer may rename it; disposing an unfinished shard closes the format's writer and the file, which the packer
/// then deletes.
/// </summary>
internal abstract class ShardFileWriter(string temporaryPath, FileStream stream) : IShardWriter
{
    private bool finished;

    protected FileStream Stream { get; } = stream;

    public string TemporaryPath { get; } = temporaryPath;

    public virtual long Bytes => Stream.Position;

    public abstract ValueTask AddAsync(PackSample sample, CancellationToken cancellationToken);

    /// <summary>Writes what the format still holds and closes its writer; the file stays open.</summary>
    protected abstract ValueTask FinishFormatAsync(CancellationToken cancellationToken);

    /// <summary>Closes the format's writer of a shard that will not be completed.</summary>
    protected abstract ValueTask AbandonFormatAsync();

    public async ValueTask CompleteAsync(CancellationToken cancellationToken)
    {
        await FinishFormatAsync(cancellationToken);
        await Stream.FlushAsync(cancellationToken);
        Stream.Flush(flushToDisk: true);
        finished = true;
        await Stream.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (finished) return;
        await AbandonFormatAsync();
        await Stream.DisposeAsync();
    }
}

/// <summary>One sample to store: its WebDataset key, the image's extension (lower case, no dot), bytes, label, label map.</summary>
internal sealed record PackSample(string Key, string SourcePath, string ImageExtension, byte[] Image, int Label, byte[]? Annotation);

/// <summary>
/// A WebDataset shard: per sample <c>key.&lt;ext&gt;</c> (the image bytes as stored), <c>key.cls</c> (the label as text,
/// when labelled) and <c>key.seg.png</c> (the label map). ustar headers (GNU long names past 100 bytes), mode 0644,
/// owner 0, time 0, so the same input gives the same bytes.
/// </summary>
internal sealed class TarShardWriter : ShardFileWriter
{
    private readonly TarWriter writer;

    private TarShardWriter(string temporaryPath) : base(temporaryPath, new FileStream(temporaryPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20)) =>
        writer = new TarWriter(Stream, TarEntryFormat.Ustar, leaveOpen: true);

    public static TarShardWriter Create(string finalPath) => new(AtomicFile.TemporaryNameFor(finalPath));

    public override async ValueTask AddAsync(PackSample sample, CancellationToken cancellationToken)
    {
        await WriteAsync($"{sample.Key}.{sample.ImageExtension}", sample.Image, cancellationToken);
        if (sample.Label >= 0) await WriteAsync($"{sample.Key}.cls", Encoding.ASCII.GetBytes(sample.Label.ToString(System.Globalization.CultureInfo.InvariantCulture)), cancellationToken);
        if (sample.Annotation is { } annotation) await WriteAsync($"{sample.Key}.seg.png", annotation, cancellationToken);
    }

    private async Task WriteAsync(string name, byte[] bytes, CancellationToken cancellationToken)
    {
        TarEntry entry = Encoding.UTF8.GetByteCount(name) <= 100
            ? new UstarTarEntry(TarEntryType.RegularFile, name)
            : new GnuTarEntry(TarEntryType.RegularFile, name);
        entry.ModificationTime = DateTimeOffset.UnixEpoch;
        entry.Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        using var data = new MemoryStream(bytes, writable: false);
        entry.DataStream = data;
        await writer.WriteEntryAsync(entry, cancellationToken);
    }

    protected override ValueTask FinishFormatAsync(CancellationToken cancellationToken) => writer.DisposeAsync();

    protected override ValueTask AbandonFormatAsync() => writer.DisposeAsync();
}

/// <summary>
/// A Hugging Face <c>datasets</c> Parquet shard: <c>image</c> struct {bytes, path} with the original bytes and the source
/// path, then <c>label</c> (int64, null when unlabelled) for classification or <c>annotation</c> (same struct) for
/// segmentation; the <c>huggingface</c> key-value metadata declares the features (the ClassLabel names included), so
/// <c>datasets.load_dataset("parquet", …)</c> sees Image and ClassLabel features. Snappy, as pyarrow writes by default.
/// </summary>
internal sealed class HfParquetShardWriter : ShardFileWriter
{
    /// <summary>A row group is also closed once its buffered cells reach this many bytes (bounds the writer's memory).</summary>
    public const long MaxRowGroupBytes = 64L << 20;

    private readonly ParquetWriter writer;
    private readonly bool segmentation;
    private readonly int rowGroupRows;
    private readonly DataField imageBytes, imagePath, label, annotationBytes, annotationPath;
    private readonly List<PackSample> buffered = [];
    private long bufferedBytes;

    private HfParquetShardWriter(string temporaryPath, FileStream stream, ParquetWriter writer, bool segmentation, int rowGroupRows, Fields fields)
        : base(temporaryPath, stream)
    {
        this.writer = writer;
        this.segmentation = segmentation;
        this.rowGroupRows = rowGroupRows;
        (imageBytes, imagePath, label, annotationBytes, annotationPath) = (fields.ImageBytes, fields.ImagePath, fields.Label, fields.AnnotationBytes, fields.AnnotationPath);
    }

    public static async Task<HfParquetShardWriter> CreateAsync(string finalPath, bool segmentation, IReadOnlyList<string> classes, int rowGroupRows, CancellationToken cancellationToken)
    {
        var fields = new Fields();
        var schema = segmentation
            ? new ParquetSchema(new StructField("image", fields.ImageBytes, fields.ImagePath), new StructField("annotation", fields.AnnotationBytes, fields.AnnotationPath))
            : new ParquetSchema(new StructField("image", fields.ImageBytes, fields.ImagePath), fields.Label);
        string temporary = AtomicFile.TemporaryNameFor(finalPath);
        var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        try
        {
            var writer = await ParquetWriter.CreateAsync(schema, stream, new ParquetOptions { CompressionMethod = CompressionMethod.Snappy }, append: false, cancellationToken);
            writer.CustomMetadata = new Dictionary<string, string> { [HfParquetSource.MetadataKey] = HfFeatures.Json(segmentation, classes) };
            return new HfParquetShardWriter(temporary, stream, writer, segmentation, rowGroupRows, fields);
        }
        catch
        {
            await stream.DisposeAsync();
            File.Delete(temporary);
            throw;
        }
    }

    public override long Bytes => Stream.Position + bufferedBytes;

    public override async ValueTask AddAsync(PackSample sample, CancellationToken cancellationToken)
    {
        buffered.Add(sample);
        bufferedBytes += sample.Image.Length + (sample.Annotation?.Length ?? 0);
        if (buffered.Count >= rowGroupRows || bufferedBytes >= MaxRowGroupBytes) await FlushRowGroupAsync(cancellationToken);
    }

    private async ValueTask FlushRowGroupAsync(CancellationToken cancellationToken)
    {
        if (buffered.Count == 0) return;
        using (var group = writer.CreateRowGroup())
        {
            int full = imageBytes.MaxDefinitionLevel;
            int[] present = Enumerable.Repeat(full, buffered.Count).ToArray();
            await group.WriteAllPartsAsync<ReadOnlyMemory<byte>>(imageBytes, buffered.Select(s => (ReadOnlyMemory<byte>)s.Image).ToArray(), present, null, cancellationToken);
            await group.WriteAllPartsAsync<ReadOnlyMemory<char>>(imagePath, buffered.Select(s => s.SourcePath.AsMemory()).ToArray(), present, null, cancellationToken);
            if (segmentation)
            {
                // A sample without a label map gets a null annotation struct (definition level 0).
                var maps = buffered.Where(s => s.Annotation is not null).ToList();
                int[] levels = buffered.Select(s => s.Annotation is null ? 0 : full).ToArray();
                await group.WriteAllPartsAsync<ReadOnlyMemory<byte>>(annotationBytes, maps.Select(s => (ReadOnlyMemory<byte>)s.Annotation!).ToArray(), levels, null, cancellationToken);
                await group.WriteAllPartsAsync<ReadOnlyMemory<char>>(annotationPath, maps.Select(s => (s.SourcePath + ".annotation").AsMemory()).ToArray(), levels, null, cancellationToken);
            }
            else
            {
                long?[] labels = buffered.Select(s => s.Label >= 0 ? (long?)s.Label : null).ToArray();
                await group.WriteAsync<long>(label, labels.AsMemory(), null, null, cancellationToken);
            }
            group.CompleteValidate();
        }
        buffered.Clear();
        bufferedBytes = 0;
    }

    protected override async ValueTask FinishFormatAsync(CancellationToken cancellationToken)
    {
        await FlushRowGroupAsync(cancellationToken);
        await writer.DisposeAsync();
    }

    protected override async ValueTask AbandonFormatAsync()
    {
        // An unfinished shard is deleted anyway: a footer that cannot be written must not hide why the pack failed.
        try { await writer.DisposeAsync(); }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException) { }
    }

    /// <summary>The columns in Hugging Face's shape: optional structs of optional members, optional int64 label.</summary>
    private sealed class Fields
    {
        public DataField ImageBytes { get; } = new DataField<byte[]>("bytes", true);
        public DataField ImagePath { get; } = new DataField<string>("path", true);
        public DataField AnnotationBytes { get; } = new DataField<byte[]>("bytes", true);
        public DataField AnnotationPath { get; } = new DataField<string>("path", true);
        public DataField Label { get; } = new DataField<long?>("label");
    }
}

/// <summary>The <c>huggingface</c> metadata of a packed file: the features as <c>datasets</c> writes them.</summary>
internal static class HfFeatures
{
    public static string Json(bool segmentation, IReadOnlyList<string> classes)
    {
        var image = new Dictionary<string, object?> { ["decode"] = true, ["id"] = null, ["_type"] = "Image" };
        var features = new Dictionary<string, object> { ["image"] = image };
        if (segmentation) features["annotation"] = image;
        else features["label"] = new Dictionary<string, object?> { ["names"] = classes, ["id"] = null, ["_type"] = "ClassLabel" };
        return System.Text.Json.JsonSerializer.Serialize(new { info = new { features } });
    }
}
