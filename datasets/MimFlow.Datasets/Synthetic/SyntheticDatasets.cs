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
        var items = set.PlanItems();
        PrepareOutputFolder(root, items.SelectMany(i => i.Files).ToList(), options.Force);

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

    /// <summary>
    /// An empty or new folder is used as it is. A non-empty one only with <c>force</c>, and then only the files the
    /// previous generation recorded in its synth.json are removed: a user's own files beside or among them stay, and
    /// a user's file where this generation would write is refused rather than overwritten.
    /// </summary>
    private static void PrepareOutputFolder(string root, IReadOnlyList<string> planned, bool force)
    {
        if (Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any())
        {
            if (!force) throw new OutputFolderNotEmptyException(root);
            var previous = PreviousFiles(root);
            foreach (string file in planned)
                if (!previous.Contains(file) && File.Exists(Path.Combine(root, file)))
                    throw new IOException($"{Path.Combine(root, file)}: a file no earlier generation wrote is where this one would write; --force replaces only a generation's own files");
            foreach (string file in previous)
            {
                string path = Path.Combine(root, file);
                if (File.Exists(path)) File.Delete(path);
                // Folders the generation made are removed once nothing of the user's is left in them.
                for (string? folder = Path.GetDirectoryName(path); folder is not null && folder.Length > root.Length && Directory.Exists(folder)
                     && !Directory.EnumerateFileSystemEntries(folder).Any(); folder = Path.GetDirectoryName(folder))
                    Directory.Delete(folder);
            }
            if (File.Exists(Path.Combine(root, ManifestFileName))) File.Delete(Path.Combine(root, ManifestFileName));
        }
        Directory.CreateDirectory(root);
    }

    /// <summary>The files the previous generation in <paramref name="root"/> wrote, as its synth.json lists them.</summary>
    private static HashSet<string> PreviousFiles(string root)
    {
        string manifest = Path.Combine(root, ManifestFileName);
        // No generation recorded: nothing is removed, and the new files may not land on anything that is there.
        if (!File.Exists(manifest)) return new HashSet<string>(StringComparer.Ordinal);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(manifest));
            if (!document.RootElement.TryGetProperty("files", out var files) || files.ValueKind != JsonValueKind.Array)
                throw new IOException($"{manifest}: lists no files (written by an older MimFlow); remove the folder's generated files by hand or choose an empty folder");
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var file in files.EnumerateArray())
            {
                string name = file.GetString() ?? "";
                if (name.Length == 0 || Path.IsPathRooted(name) || name.Split('/').Any(part => part is "" or "." or ".."))
                    throw new InvalidDataException($"{manifest}: '{name}' is not a path inside the folder");
                names.Add(name);
            }
            return names;
        }
        catch (JsonException e) { throw new InvalidDataException($"{manifest}: not a generation record ({e.Message})", e); }
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
            files = set.PlanItems().SelectMany(i => i.Files).Order(StringComparer.Ordinal),
        };
        AtomicFile.WriteAllText(Path.Combine(root, ManifestFileName), JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>One image to generate (and its label map, for ADE20K), identified by its position in the plan.</summary>
internal sealed record SynthesisItem(int Index, bool Training, int ClassIndex, IReadOnlyList<string> Files);

internal interface ISyntheticSet
{
    IReadOnlyList<string> ClassNames { get; }

    IReadOnlyList<string> ClassDescriptions { get; }

    IReadOnlyList<SynthesisItem> PlanItems();

    /// <summary>The files of one item as (relative path, bytes), computed from the seed and the item alone.</summary>
    IEnumerable<(string RelativePath, byte[] Content)> Render(SynthesisItem item);
}
