using MimFlow.Core.IO;
using System.Globalization;
using System.Text.Json;
using MimFlow.Data.Decoding;
using MimFlow.Data.Sources.Layouts;
using Parquet;
using Parquet.Schema;

namespace MimFlow.Data.Sources;

/// <summary>
/// Hugging Face <c>datasets</c> Parquet files (<c>--layout hf-parquet</c>): the Image feature is a struct column
/// <c>image {bytes: binary, path: string}</c>; classification adds <c>label</c> (int64, a ClassLabel), scene parsing
/// (<c>scene_parse_150</c>) adds <c>annotation</c> (the label map, same struct) and <c>scene_category</c> (not used: the
/// label maps carry the 150 ADE20K classes). Files are chosen by <see cref="ShardSelection"/> (a repository's
/// <c>data/train-00000-of-00004.parquet</c>, <c>data/validation-…</c>). Class names come from the file's
/// <c>huggingface</c> key-value metadata (<c>{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}</c>);
/// without it, "0".."max label".
/// <para>
/// Listing reads each file's footer and its <c>label</c> column only. Relative path (hence sample_id) of a row:
/// <c>&lt;file path below the root&gt;/&lt;row number in the file&gt;</c> — unique and free to compute, stable as long
/// as the files are not re-sharded; <c>image.path</c> is not used, being often null and not unique.
/// </para>
/// <para>
/// Reading a row decodes its row group's image (and annotation) column chunk once into a cache of decoded row groups
/// bounded by bytes (<see cref="DefaultCacheBytes"/>, LRU; the groups being read come on top, one per concurrent
/// reader at most), so reading in file order costs one column-chunk read per row group. Random order costs up to one
/// row group read per sample once the permutation's working set exceeds the cache. A null image, a row group that
/// does not decode or a garbage cell is refused (quarantined) naming the file, row and row group.
/// </para>
/// </summary>
public static class HfParquetSource
{
    public const string Extension = ".parquet";
    public const string MetadataKey = "huggingface";

    /// <summary>Default byte bound of the decoded row-group cache: 128 MiB (about 11 row groups of 100 ImageNet JPEGs).</summary>
    public const long DefaultCacheBytes = 128L << 20;

    public static SampleIndex Open(string data, DatasetSplit split, long cacheBytes = DefaultCacheBytes)
    {
        var shards = ShardSelection.Select(data, Extension, split, "hf-parquet");
        // Parquet.Net is asynchronous only; the listing runs on the pool so no caller's synchronisation context can deadlock it.
        return Task.Run(() => OpenAsync(shards, cacheBytes)).GetAwaiter().GetResult();
    }

    private static async Task<SampleIndex> OpenAsync(SelectedShards shards, long cacheBytes)
    {
        var files = new List<ParquetFileListing>();
        IReadOnlyList<string>? names = null;
        int total = 0;
        var labels = new List<int>();
        foreach (string file in shards.Files)
        {
            var listing = await ParquetFileListing.ReadAsync(file, shards.RelativeName(file), total, labels);
            if (files.Count > 0 && listing.HasAnnotation != files[0].HasAnnotation)
                throw new InvalidDataException($"{file}: {(listing.HasAnnotation ? "has" : "lacks")} an 'annotation' column, unlike {shards.Files[0]}");
            names ??= listing.ClassNames;
            total = checked(total + listing.Rows);
            files.Add(listing);
        }
        bool segmentation = files.Count > 0 && files[0].HasAnnotation;
        int maxLabel = labels.Count == 0 ? -1 : labels.Max();
        IReadOnlyList<string> classes = segmentation ? Ade20kLayout.ClassNames
            : names ?? (maxLabel >= 0 ? Enumerable.Range(0, maxLabel + 1).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList() : []);
        var store = new ParquetStore(files, labels.ToArray(), segmentation, cacheBytes);
        if (!segmentation && names is not null) store.RefuseLabelsBeyond(classes.Count);
        return new SampleIndex(shards.Root, DatasetLayouts.Name(DatasetLayout.HfParquet), classes, store);
    }

    /// <summary>ClassLabel names of <c>label</c> in the <c>huggingface</c> metadata, or null.</summary>
    internal static IReadOnlyList<string>? ClassNamesOf(string? metadata, string column = "label")
    {
        if (metadata is null) return null;
        try
        {
            using var document = JsonDocument.Parse(metadata);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return null;
            var features = root.TryGetProperty("info", out var info) && info.ValueKind == JsonValueKind.Object && info.TryGetProperty("features", out var f) ? f
                : root.TryGetProperty("features", out var g) ? g : default;
            if (features.ValueKind != JsonValueKind.Object || !features.TryGetProperty(column, out var label) || label.ValueKind != JsonValueKind.Object) return null;
            if (!label.TryGetProperty("names", out var list) || list.ValueKind != JsonValueKind.Array) return null;
            return list.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText()).ToList();
        }
        catch (JsonException)
        {
            // Metadata we cannot read costs the class names, not the dataset.
            return null;
        }
    }
}

/// <summary>One Parquet file as listed: its rows per row group, and where its samples start in the index.</summary>
internal sealed class ParquetFileListing
{
    public required string Path { get; init; }
    public required string Name { get; init; }
    public required int FirstSample { get; init; }
    public required int Rows { get; init; }

    /// <summary>First row of each row group, and the row count as a last entry.</summary>
    public required int[] GroupStarts { get; init; }

    public required bool HasAnnotation { get; init; }
    public IReadOnlyList<string>? ClassNames { get; init; }

    public static async Task<ParquetFileListing> ReadAsync(string path, string name, int firstSample, List<int> labels)
    {
        int before = labels.Count;
        try
        {
            return await ReadCoreAsync(path, name, firstSample, labels);
        }
        catch (Exception e) when (e is not (InvalidDataException or OperationCanceledException or OutOfMemoryException or FileNotFoundException or UnauthorizedAccessException
                                       or NotARegularFileException))
        {
            // A footer that parses but a label column chunk that does not: still an error naming the file.
            labels.RemoveRange(before, labels.Count - before);
            throw new InvalidDataException($"{path}: unreadable Parquet metadata or label column ({e.Message})", e);
        }
    }

    private static async Task<ParquetFileListing> ReadCoreAsync(string path, string name, int firstSample, List<int> labels)
    {
        ParquetReader reader;
        var stream = RegularFile.OpenRead(path);
        try
        {
            reader = await ParquetReader.CreateAsync(stream, null, leaveStreamOpen: false);
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
        {
            // Whatever the reader throws on a file that is not Parquet, the user needs its name and the reason.
            await stream.DisposeAsync();
            throw new InvalidDataException($"{path}: not a readable Parquet file ({e.Message})", e);
        }
        await using (reader)
        {
            var fields = reader.Schema.GetDataFields();
            if (HfColumns.Find(fields, HfColumns.ImageBytes) is null)
                throw new InvalidDataException($"{path}: no 'image' struct column with a 'bytes' field (the Hugging Face Image feature); columns: {string.Join(", ", fields.Select(f => f.Path.ToString()))}");
            bool annotation = HfColumns.Find(fields, HfColumns.AnnotationBytes) is not null;
            var label = annotation ? null : HfColumns.Find(fields, HfColumns.Label);
            if (label is not null && label.ClrType != typeof(long) && label.ClrType != typeof(int))
                throw new InvalidDataException($"{path}: the 'label' column holds {label.ClrType.Name}, not an integer class index");
            var starts = new int[reader.RowGroupCount + 1];
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var group = reader.OpenRowGroupReader(g);
                int rows = checked((int)group.RowCount);
                starts[g + 1] = checked(starts[g] + rows);
                if (label is null)
                {
                    labels.AddRange(Enumerable.Repeat(-1, rows));
                    continue;
                }
                var values = new long?[rows];
                if (label.ClrType == typeof(long)) await ReadLabels<long>(group, label, values);
                else await ReadLabels<int>(group, label, values);
                labels.AddRange(values.Select(v => v is long l and >= 0 and <= int.MaxValue ? (int)l : -1));
            }
            reader.CustomMetadata.TryGetValue(HfParquetSource.MetadataKey, out string? metadata);
            return new ParquetFileListing
            {
                Path = path, Name = name, FirstSample = firstSample, Rows = starts[^1], GroupStarts = starts, HasAnnotation = annotation,
                ClassNames = HfParquetSource.ClassNamesOf(metadata),
            };
        }
    }

    private static async Task ReadLabels<T>(ParquetRowGroupReader group, DataField field, long?[] into) where T : struct, IConvertible
    {
        if (field.IsNullable)
        {
            var values = new T?[into.Length];
            await group.ReadAsync<T>(field, values, null);
            for (int i = 0; i < into.Length; i++) into[i] = values[i]?.ToInt64(CultureInfo.InvariantCulture);
        }
        else
        {
            var values = new T[into.Length];
            await group.ReadAsync<T>(field, values, null);
            for (int i = 0; i < into.Length; i++) into[i] = values[i].ToInt64(CultureInfo.InvariantCulture);
        }
    }

    /// <summary>The row group holding <paramref name="row"/>.</summary>
    public int GroupOf(int row)
    {
        int at = Array.BinarySearch(GroupStarts, row);
        if (at < 0) at = ~at - 1;
        // Empty row groups share their start with the next one: take the last group starting there.
        while (at + 1 < GroupStarts.Length - 1 && GroupStarts[at + 1] == row) at++;
        return at;
    }
}

/// <summary>The column paths of the Hugging Face layout.</summary>
internal static class HfColumns
{
    public const string ImageBytes = "image/bytes";
    public const string AnnotationBytes = "annotation/bytes";
    public const string Label = "label";

    public static DataField? Find(IEnumerable<DataField> fields, string path) => fields.FirstOrDefault(f => f.Path.ToString() == path);
}

/// <summary>One row group's cells, decoded.</summary>
internal sealed record DecodedRowGroup(byte[]?[] Images, byte[]?[]? Annotations, string? Error)
{
    public long Bytes => (Images.Sum(b => (long)(b?.Length ?? 0)) + (Annotations?.Sum(b => (long)(b?.Length ?? 0)) ?? 0)) + 64L * Images.Length;
}

/// <summary>Rows of Hugging Face Parquet files, read through a byte-bounded cache of decoded row groups.</summary>
internal sealed class ParquetStore : SampleStore
{
    private readonly List<ParquetFileListing> files;
    private readonly int[] labels;
    private readonly int[] fileStarts;
    private readonly bool segmentation;
    private readonly RowGroupCache cache;
    private readonly Dictionary<int, string> defects = [];

    public ParquetStore(List<ParquetFileListing> files, int[] labels, bool segmentation, long cacheBytes)
    {
        this.files = files;
        this.labels = labels;
        this.segmentation = segmentation;
        fileStarts = files.Select(f => f.FirstSample).ToArray();
        cache = new RowGroupCache(cacheBytes, LoadAsync);
    }

    public override int Count => labels.Length;

    public override bool HasAnnotations => segmentation;

    /// <summary>Row groups decoded so far (each read of a group not in the cache is one).</summary>
    public int RowGroupLoads => cache.Loads;

    public void RefuseLabelsBeyond(int classes)
    {
        for (int i = 0; i < labels.Length; i++)
        {
            if (labels[i] < classes) continue;
            var (file, row) = Locate(i);
            defects[i] = $"label {labels[i]} is outside the {classes} ClassLabel names of {file.Name}";
            labels[i] = -1;
        }
    }

    public override string RelativePath(int index)
    {
        var (file, row) = Locate(index);
        return $"{file.Name}/{row.ToString(CultureInfo.InvariantCulture)}";
    }

    public override int Label(int index) => labels[index];

    public override string? AnnotationPath(int index) => segmentation ? RelativePath(index) + ".annotation" : null;

    public override ByteSource Image(int index) => defects.TryGetValue(index, out string? defect) ? new BrokenBytes(defect) : Cell(index, annotation: false);

    public override ByteSource? Annotation(int index) => segmentation ? Cell(index, annotation: true) : null;

    public override string? Location(int index)
    {
        var (file, row) = Locate(index);
        return $"{file.Name}, row {row:N0} (row group {file.GroupOf(row)})";
    }

    private ParquetCell Cell(int index, bool annotation)
    {
        int f = FileOf(index);
        int row = index - fileStarts[f];
        int group = files[f].GroupOf(row);
        return new ParquetCell(cache, f, group, row - files[f].GroupStarts[group], annotation);
    }

    private int FileOf(int index)
    {
        int at = Array.BinarySearch(fileStarts, index);
        if (at < 0) at = ~at - 1;
        while (at + 1 < fileStarts.Length && fileStarts[at + 1] == index) at++;
        return at;
    }

    private (ParquetFileListing File, int Row) Locate(int index)
    {
        int f = FileOf(index);
        return (files[f], index - fileStarts[f]);
    }

    private async Task<DecodedRowGroup> LoadAsync(int fileIndex, int group)
    {
        var file = files[fileIndex];
        try
        {
            await using var stream = RegularFile.OpenRead(file.Path, 1 << 16);
            await using var reader = await ParquetReader.CreateAsync(stream, null, leaveStreamOpen: false);
            var fields = reader.Schema.GetDataFields();
            using var rowGroup = reader.OpenRowGroupReader(group);
            int rows = checked((int)rowGroup.RowCount);
            var images = await CellsAsync(rowGroup, HfColumns.Find(fields, HfColumns.ImageBytes)!, rows);
            var annotations = segmentation ? await CellsAsync(rowGroup, HfColumns.Find(fields, HfColumns.AnnotationBytes)!, rows) : null;
            return new DecodedRowGroup(images, annotations, null);
        }
        catch (Exception e) when (e is not (IOException or UnauthorizedAccessException or OperationCanceledException))
        {
            // A damaged column chunk: every row of the group is refused with this reason (kept, so they fail fast).
            return new DecodedRowGroup([], null, $"row group {group} of {file.Name} does not decode: {e.Message}");
        }
    }

    /// <summary>A binary struct member with nulls in place: a value is present only at the field's full definition
    /// level (lower levels are a null struct or a null member).</summary>
    private static async Task<byte[]?[]> CellsAsync(ParquetRowGroupReader group, DataField field, int rows)
    {
        var values = new ReadOnlyMemory<byte>[rows];
        var definitions = new int[rows];
        await group.ReadRawAsync<ReadOnlyMemory<byte>>(field, values, definitions, null, CancellationToken.None);
        var cells = new byte[]?[rows];
        int next = 0;
        for (int i = 0; i < rows; i++)
            if (definitions[i] == field.MaxDefinitionLevel) cells[i] = values[next++].ToArray();
        return cells;
    }

    private sealed class ParquetCell(RowGroupCache cache, int file, int group, int row, bool annotation) : ByteSource
    {
        public override async ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken)
        {
            DecodedRowGroup decoded;
            try
            {
                decoded = await cache.GetAsync(file, group, cancellationToken);
            }
            catch (NotARegularFileException e)
            {
                throw new BadImageException($"unreadable: {e.Message}", e);
            }
            if (decoded.Error is { } error) throw new BadImageException(error);
            byte[]? cell = (annotation ? decoded.Annotations! : decoded.Images)[row];
            if (cell is null) throw new BadImageException(annotation ? "the annotation is null" : "the image is null (no bytes)");
            if (cell.Length > maxBytes) throw new BadImageException($"image of {cell.Length:N0} bytes exceeds the limit of {maxBytes:N0}");
            // The cache keeps its copy: callers get their own, which they may change.
            return cell.ToArray();
        }
    }
}

/// <summary>
/// Decoded row groups by (file, group), least recently used first out once their bytes pass the bound. A group is
/// loaded once however many readers ask for it at the same time; a load that failed with an IO error is forgotten,
/// so the next read retries it.
/// </summary>
internal sealed class RowGroupCache(long capacityBytes, Func<int, int, Task<DecodedRowGroup>> load)
{
    private readonly Lock gate = new();
    private readonly Dictionary<(int, int), LinkedListNode<Entry>> entries = [];
    private readonly LinkedList<Entry> recency = [];
    private long bytes;

    /// <summary>Loads so far (for tests and reports).</summary>
    public int Loads { get; private set; }

    public async Task<DecodedRowGroup> GetAsync(int file, int group, CancellationToken cancellationToken)
    {
        Task<DecodedRowGroup> task;
        lock (gate)
        {
            if (entries.TryGetValue((file, group), out var node))
            {
                recency.Remove(node);
                recency.AddFirst(node);
                task = node.Value.Task;
            }
            else
            {
                Loads++;
                var entry = new Entry((file, group));
                node = recency.AddFirst(entry);
                entries[(file, group)] = node;
                // Loaded without the caller's token: other readers may wait for the same group.
                entry.Task = task = LoadAndAccount(entry);
            }
        }
        return await task.WaitAsync(cancellationToken);
    }

    private async Task<DecodedRowGroup> LoadAndAccount(Entry entry)
    {
        await Task.Yield();
        DecodedRowGroup decoded;
        try
        {
            decoded = await load(entry.Key.File, entry.Key.Group);
        }
        catch
        {
            lock (gate) Forget(entry);
            throw;
        }
        lock (gate)
        {
            if (!entries.TryGetValue(entry.Key, out var node) || node.Value != entry) return decoded;
            entry.Bytes = decoded.Bytes;
            bytes += entry.Bytes;
            // Oldest first, never the group just loaded (its readers are waiting for it).
            for (var last = recency.Last; bytes > capacityBytes && last is not null && last.Value != entry;)
            {
                var previous = last.Previous;
                if (last.Value.Bytes > 0) Forget(last.Value);
                last = previous;
            }
        }
        return decoded;
    }

    private void Forget(Entry entry)
    {
        if (!entries.TryGetValue(entry.Key, out var node) || node.Value != entry) return;
        entries.Remove(entry.Key);
        recency.Remove(node);
        bytes -= entry.Bytes;
    }

    private sealed class Entry((int File, int Group) key)
    {
        public (int File, int Group) Key { get; } = key;
        public Task<DecodedRowGroup> Task { get; set; } = null!;
        public long Bytes { get; set; }
    }
}
