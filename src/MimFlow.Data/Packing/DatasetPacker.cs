using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Threading.Tasks.Dataflow;
using MimFlow.Core.IO;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Data.Sources.Layouts;

namespace MimFlow.Data.Packing;

/// <summary>
/// Packs a folder layout (ImageNet, ADE20K) into WebDataset tars or Hugging Face Parquet files, in listing order, so
/// the packed set lists the same samples in the same order with the same labels and image bytes (nothing is
/// re-encoded): a run over either form draws the same augmentations.
/// <para>
/// Output: wds: <c>OUT/train/&lt;layout&gt;-train-000000.tar</c>, <c>OUT/val/&lt;layout&gt;-val-000000.tar</c> and
/// <c>OUT/classes.json</c>; hf-parquet: <c>OUT/data/train-00000-of-0000N.parquet</c> and
/// <c>OUT/data/validation-…</c> (a Hugging Face repository's shape), class names in each file's metadata. Both are
/// what <c>--layout wds|hf-parquet --data OUT --split train|val</c> reads. Sample keys: the path below the split
/// folder without its extension, with '.' and '%' escaped (%2E, %25) so WebDataset's first-dot rule cannot merge two
/// samples.
/// </para>
/// <para>
/// A shard is cut after the first sample that brings it to the target size (hf-parquet closes the row group then being
/// filled, so only a shard's last group may be short), written to hidden
/// temporary files and renamed only when the whole split is written: a failed or cancelled pack leaves no shard.
/// Existing shards of the split are refused unless <see cref="PackRequest.Force"/>, which replaces them (stale ones
/// of a larger earlier pack are removed; nothing else in the folder is touched). An input that cannot be read stops
/// the pack naming it (a damaged but readable image is copied as it is and quarantined later, as from the folder).
/// </para>
/// </summary>
public static class DatasetPacker
{
    public static async Task<PackResult> PackAsync(PackRequest request, IProgress<PackProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate();
        var watch = Stopwatch.StartNew();
        string output = Path.GetFullPath(request.OutputDirectory);
        Directory.CreateDirectory(output);
        using var writerLock = OutputLock.Acquire(output, "datasets pack");
        var splits = request.Split is { } one ? [one] : new[] { DatasetSplit.Train, DatasetSplit.Validation };
        var indexes = new List<(DatasetSplit Split, SampleIndex Index)>();
        foreach (var split in splits)
        {
            if (request.Split is null && split == DatasetSplit.Validation && !HasValidation(request)) continue;
            indexes.Add((split, DatasetSource.Open(request.From, request.Layout, split, request.GroundTruth)));
        }
        var classes = indexes[0].Index.Classes;
        // Everything is checked before anything is written.
        foreach (var (split, _) in indexes) ExistingShards(request, output, split, refuse: !request.Force);
        if (request.Format == PackFormat.Wds) CheckClassesFile(output, classes, request.Force);

        var packed = new List<PackedSplit>();
        foreach (var (split, index) in indexes)
            packed.Add(await PackSplitAsync(request, output, split, index, progress, cancellationToken));
        if (request.Format == PackFormat.Wds)
            AtomicFile.WriteAllText(Path.Combine(output, WebDatasetSource.ClassesJson), JsonSerializer.Serialize(new { classes }, new JsonSerializerOptions { WriteIndented = true }));
        return new PackResult(output, request.Format, packed, classes, watch.Elapsed);
    }

    private static bool HasValidation(PackRequest request) => request.Layout == DatasetLayout.ImageNet
        ? Directory.Exists(ImageNetLayout.SplitFolder(request.From, training: false))
        : Directory.Exists(Ade20kLayout.ImagesFolder(request.From, training: false));

    private static string SplitName(DatasetSplit split) => split == DatasetSplit.Train ? "train" : "val";

    private static string Folder(PackRequest request, string output, DatasetSplit split) =>
        request.Format == PackFormat.Wds ? Path.Combine(output, SplitName(split)) : Path.Combine(output, "data");

    private static string ShardName(PackRequest request, DatasetSplit split, int number, int count) => request.Format == PackFormat.Wds
        ? $"{DatasetLayouts.Name(request.Layout)}-{SplitName(split)}-{number:D6}.tar"
        : $"{(split == DatasetSplit.Train ? "train" : "validation")}-{number:D5}-of-{count:D5}.parquet";

    /// <summary>Shards of the split that an earlier pack wrote (by our own naming); refused when asked.</summary>
    private static List<string> ExistingShards(PackRequest request, string output, DatasetSplit split, bool refuse)
    {
        string folder = Folder(request, output, split);
        if (!Directory.Exists(folder)) return [];
        string prefix = request.Format == PackFormat.Wds ? $"{DatasetLayouts.Name(request.Layout)}-{SplitName(split)}-" : $"{(split == DatasetSplit.Train ? "train" : "validation")}-";
        string extension = request.Format == PackFormat.Wds ? WebDatasetSource.Extension : HfParquetSource.Extension;
        var existing = Directory.EnumerateFiles(folder)
            .Where(f => Path.GetFileName(f).StartsWith(prefix, StringComparison.Ordinal) && f.EndsWith(extension, StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).ToList();
        if (refuse && existing.Count > 0) throw new PackOutputExistsException(existing[0]);
        return existing;
    }

    private static void CheckClassesFile(string output, IReadOnlyList<string> classes, bool force)
    {
        string path = Path.Combine(output, WebDatasetSource.ClassesJson);
        if (force || !File.Exists(path)) return;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            if (document.RootElement.TryGetProperty("classes", out var names) && names.EnumerateArray().Select(n => n.GetString()).SequenceEqual(classes)) return;
        }
        catch (JsonException)
        {
        }
        throw new PackOutputExistsException(path);
    }

    private static async Task<PackedSplit> PackSplitAsync(PackRequest request, string output, DatasetSplit split, SampleIndex index,
        IProgress<PackProgress>? progress, CancellationToken cancellationToken)
    {
        string folder = Folder(request, output, split);
        Directory.CreateDirectory(folder);
        string prefix = SplitPrefix(index);
        var temporaries = new List<string>();
        IShardWriter? writer = null;
        int done = 0;
        long bytes = 0;
        var read = new TransformBlock<int, PackSample>(i => ReadAsync(index, index[i], prefix, cancellationToken),
            new ExecutionDataflowBlockOptions
            {
                MaxDegreeOfParallelism = request.ReadConcurrency, BoundedCapacity = 2 * request.ReadConcurrency, EnsureOrdered = true,
                CancellationToken = cancellationToken,
            });
        var feed = Task.Run(async () =>
        {
            try
            {
                for (int i = 0; i < index.Count; i++)
                    if (!await read.SendAsync(i, cancellationToken)) break;
            }
            finally
            {
                read.Complete();
            }
        }, cancellationToken);
        try
        {
            await foreach (var sample in read.ReadAllAsync(cancellationToken))
            {
                writer ??= await OpenAsync(request, folder, split, temporaries.Count, index, cancellationToken);
                await writer.AddAsync(sample, cancellationToken);
                progress?.Report(new PackProgress(SplitName(split), ++done, index.Count));
                if (writer.Bytes >= request.ShardBytes)
                {
                    await writer.CompleteAsync(cancellationToken);
                    temporaries.Add(writer.TemporaryPath);
                    writer = null;
                }
            }
            await feed;
            if (writer is not null)
            {
                await writer.CompleteAsync(cancellationToken);
                temporaries.Add(writer.TemporaryPath);
                writer = null;
            }
            // All shards of the split are whole: publish them, then drop shards of an earlier, larger pack.
            var stale = ExistingShards(request, output, split, refuse: !request.Force);
            var finals = new List<string>();
            for (int s = 0; s < temporaries.Count; s++)
            {
                string final = Path.Combine(folder, ShardName(request, split, s, temporaries.Count));
                bytes += new FileInfo(temporaries[s]).Length;
                File.Move(temporaries[s], final, overwrite: request.Force);
                finals.Add(final);
            }
            var replaced = stale.Where(f => !finals.Contains(f, StringComparer.Ordinal)).ToList();
            foreach (string old in replaced) File.Delete(old);
            temporaries.Clear();
            return new PackedSplit(SplitName(split), index.Count, finals, bytes, replaced);
        }
        finally
        {
            if (writer is not null) await writer.DisposeAsync();
            foreach (string temporary in temporaries)
                if (File.Exists(temporary)) File.Delete(temporary);
        }
    }

    private static async Task<IShardWriter> OpenAsync(PackRequest request, string folder, DatasetSplit split, int number, SampleIndex index, CancellationToken cancellationToken)
    {
        // The final name is known only at the end for hf-parquet (…-of-N); the temporary file only needs the folder.
        string placeholder = Path.Combine(folder, ShardName(request, split, number, 0));
        return request.Format == PackFormat.Wds
            ? TarShardWriter.Create(placeholder)
            : await HfParquetShardWriter.CreateAsync(placeholder, index.HasAnnotations, index.Classes, request.RowGroupRows, cancellationToken);
    }

    /// <summary>The folder part shared by every sample of the split (<c>train/</c>, <c>ADEChallengeData2016/images/training/</c>).</summary>
    private static string SplitPrefix(SampleIndex index)
    {
        if (index.Count == 0) return "";
        string first = index[0].RelativePath;
        return index.Layout == DatasetLayouts.Name(DatasetLayout.Ade20k)
            ? first[..(first.LastIndexOf('/') + 1)]
            : first[..(first.IndexOf('/') + 1)];
    }

    private static async Task<PackSample> ReadAsync(SampleIndex index, Sample sample, string prefix, CancellationToken cancellationToken)
    {
        try
        {
            byte[] image = await index.ReadImageAsync(sample, cancellationToken);
            byte[]? annotation = await index.ReadAnnotationAsync(sample, cancellationToken);
            string below = sample.RelativePath.StartsWith(prefix, StringComparison.Ordinal) ? sample.RelativePath[prefix.Length..] : sample.RelativePath;
            int slash = below.LastIndexOf('/');
            int dot = below.LastIndexOf('.');
            string extension = dot > slash ? below[(dot + 1)..].ToLowerInvariant() : "jpg";
            string stem = dot > slash ? below[..dot] : below;
            return new PackSample(KeyOf(stem), sample.RelativePath, extension, image, sample.Label, annotation);
        }
        catch (BadImageException e)
        {
            throw new InvalidDataException($"{Path.Combine(index.Root, sample.RelativePath)}: {e.Reason}; pack copies every sample, so it stopped (fix or remove the file)", e);
        }
    }

    /// <summary>A WebDataset key: the stem with '%' and '.' escaped in its last segment, so no two stems share a key.</summary>
    internal static string KeyOf(string stem)
    {
        int slash = stem.LastIndexOf('/');
        var key = new StringBuilder(stem.Length + 8).Append(stem, 0, slash + 1);
        foreach (char c in stem.AsSpan(slash + 1))
            key.Append(c switch { '%' => "%25", '.' => "%2E", _ => c.ToString() });
        return key.ToString();
    }
}
