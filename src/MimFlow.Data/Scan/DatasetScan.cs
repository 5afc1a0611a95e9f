using System.Diagnostics;
using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Sources;

namespace MimFlow.Data.Scan;

/// <summary>What <c>mimflow scan</c> found; written as scan.json.</summary>
public sealed record ScanReport(
    string Root, string Layout, string Split, int Listed, int Ok, int Quarantined, int Classes,
    double Seconds, double ImagesPerSecond, string? QuarantineFile);

public sealed record ScanProgress(int Done, int Total, double ImagesPerSecond);

/// <summary>
/// Runs read + decode + augment (the pretraining recipe, as training would) over a whole dataset without training:
/// every input ends as ok or quarantined with a reason; writes scan.json, quarantine.jsonl and classes.json.
/// </summary>
public static class DatasetScan
{
    public const string ReportFileName = "scan.json";
    public const string ClassesFileName = "classes.json";
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static async Task<ScanReport> RunAsync(SampleIndex index, string outputDirectory, DatasetSplit split, LoaderOptions options,
        IProgress<ScanProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(outputDirectory);
        using var writerLock = OutputLock.Acquire(outputDirectory, "scan");
        using var quarantine = new QuarantineLog(outputDirectory);
        var loader = new DataflowLoader(index, new PretrainRecipe(SecondViewSize: null), options with { Format = PixelFormat.UInt8, Shuffle = false }, quarantine);
        var watch = Stopwatch.StartNew();
        int ok = 0;
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
        {
            using (batch) ok += batch.Count;
            progress?.Report(new ScanProgress(ok + quarantine.Count, index.Count, ok / Math.Max(watch.Elapsed.TotalSeconds, 1e-9)));
        }
        double seconds = watch.Elapsed.TotalSeconds;
        var report = new ScanReport(index.Root, index.Layout, split == DatasetSplit.Train ? "train" : "val", index.Count, ok, quarantine.Count,
            index.Classes.Count, seconds, ok / Math.Max(seconds, 1e-9), quarantine.FilePath);
        if (ok + quarantine.Count != index.Count)
            throw new InvalidOperationException($"scan accounted for {ok + quarantine.Count} of {index.Count} inputs");
        AtomicFile.WriteAllText(Path.Combine(outputDirectory, ReportFileName), JsonSerializer.Serialize(report, Json));
        AtomicFile.WriteAllText(Path.Combine(outputDirectory, ClassesFileName), JsonSerializer.Serialize(new { classes = index.Classes }, Json));
        return report;
    }
}
