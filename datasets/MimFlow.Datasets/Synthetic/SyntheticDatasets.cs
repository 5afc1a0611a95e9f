using System.Diagnostics;
using System.Text.Json;
using MimFlow.Core.IO;

namespace MimFlow.Datasets.Synthetic;

/// <summary>
/// Writes the embedded default datasets: an ImageNet-layout classification set whose classes differ in shape,
/// texture and colour, and an ADE20K-layout scene-parsing set whose label maps are painted with the same shapes
/// as the images. Every file depends only on the options (seed included), never on thread scheduling; files
/// appear under their final names only when complete.
/// </summary>
public static class SyntheticDatasets
{
    public const string ManifestFileName = "synth.json";

    public static async Task<SynthesisResult> WriteAsync(
        SynthesisOptions options, IProgress<SynthesisProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var watch = Stopwatch.StartNew();
        string root = Path.GetFullPath(options.OutputDirectory);
        ISyntheticSet set = options.Kind == SyntheticKind.ImageNet ? new SyntheticImageNet(options) : new SyntheticAde20k(options);
        PrepareOutputFolder(root, set.OwnedEntries, options.Force);

        var items = set.PlanItems();
        int done = 0;
        long bytes = 0;
        progress?.Report(new SynthesisProgress(0, items.Count));
        foreach (string folder in items.SelectMany(i => i.Files.Select(f => Path.GetDirectoryName(Path.Combine(root, f))!)).Distinct())
            Directory.CreateDirectory(folder);

        await Parallel.ForEachAsync(
            items,
            new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellationToken },
            (item, token) =>
            {
                token.ThrowIfCancellationRequested();
                foreach (var (relativePath, content) in set.Render(item))
                {
                    AtomicFile.WriteAllBytes(Path.Combine(root, relativePath), content);
                    Interlocked.Add(ref bytes, content.Length);
                }
                progress?.Report(new SynthesisProgress(Interlocked.Increment(ref done), items.Count));
                return ValueTask.CompletedTask;
            });

        int train = items.Count(i => i.Training);
        var result = new SynthesisResult(root, train, items.Count - train, bytes, watch.Elapsed, set.ClassNames);
        WriteManifest(root, options, set, result);
        return result;
    }

    private static void PrepareOutputFolder(string root, IReadOnlyList<string> ownedEntries, bool force)
    {
        if (Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any())
        {
            if (!force) throw new OutputFolderNotEmptyException(root);
            // Only what a generation writes is removed: other files a user keeps beside it stay.
            foreach (string entry in ownedEntries.Append(ManifestFileName).Select(e => Path.Combine(root, e)))
            {
                if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
                else if (File.Exists(entry)) File.Delete(entry);
            }
        }
        Directory.CreateDirectory(root);
    }

    private static void WriteManifest(string root, SynthesisOptions options, ISyntheticSet set, SynthesisResult result)
    {
        var manifest = new
        {
            generator = "mimflow datasets synth",
            kind = options.Kind.ToString().ToLowerInvariant(),
            seed = options.Seed,
            images = options.Images,
            classes = options.ClassCount,
            min_side = options.MinSide,
            max_side = options.MaxSide,
            validation_fraction = options.ValidationFraction,
            jpeg_quality = options.JpegQuality,
            train_images = result.TrainImages,
            validation_images = result.ValidationImages,
            class_descriptions = set.ClassDescriptions,
        };
        AtomicFile.WriteAllText(Path.Combine(root, ManifestFileName), JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>One image to generate (and its label map, for ADE20K), identified by its position in the plan.</summary>
internal sealed record SynthesisItem(int Index, bool Training, int ClassIndex, IReadOnlyList<string> Files);

internal interface ISyntheticSet
{
    /// <summary>Top-level entries of the output folder this set writes (removed by --force).</summary>
    IReadOnlyList<string> OwnedEntries { get; }

    IReadOnlyList<string> ClassNames { get; }

    IReadOnlyList<string> ClassDescriptions { get; }

    IReadOnlyList<SynthesisItem> PlanItems();

    /// <summary>The files of one item as (relative path, bytes), computed from the seed and the item alone.</summary>
    IEnumerable<(string RelativePath, byte[] Content)> Render(SynthesisItem item);
}
