using System.Text.Json;
using MimFlow.Core.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;

namespace MimFlow.Benchmarks;

/// <summary>What <c>mimflow bench data</c> measures: a recipe's decode + augment + collate over a dataset, per worker count.</summary>
public sealed record DataBenchRequest(SampleIndex Data)
{
    public string Recipe { get; init; } = "pretrain";
    public IReadOnlyList<int> Workers { get; init; } = [1, Environment.ProcessorCount];
    public int Images { get; init; } = 1000;
    public int BatchSize { get; init; } = 64;

    /// <summary>torchvision + PIL (<c>peer_data.py</c>), run on the same folder first; null: no peer.</summary>
    public string? Peer { get; init; }
    public string Python { get; init; } = "/usr/bin/python3";

    public void Validate()
    {
        if (Workers.Count == 0 || Workers.Any(w => w < 1)) throw new ArgumentException($"worker counts must be positive (got {string.Join(",", Workers)})");
        if (Images < 1 || BatchSize < 1) throw new ArgumentException("images and batch size must be at least 1");
        _ = RecipeCatalog.ByName(Recipe);
    }
}

/// <summary>One worker count: ours, the peer's (if run), and ours over the peer's per core.</summary>
public sealed record DataBenchRow(LoaderBenchmarkResult Ours, double? PeerImagesPerSecond)
{
    public double? PeerPerWorker => PeerImagesPerSecond / Ours.Workers;
    public double? RatioPerCore => PeerImagesPerSecond is > 0 ? Ours.ImagesPerSecondPerCore / (PeerImagesPerSecond.Value / Ours.Workers) : null;
}

public sealed record DataBenchResult(DataBenchRequest Request, IReadOnlyList<DataBenchRow> Rows, IReadOnlyList<string> PeerLines)
{
    /// <summary><c>--json</c>: the figures with the machine they were measured on.</summary>
    public string ToJson()
    {
        var best = Rows.MaxBy(r => r.Ours.Workers)!.Ours;
        var host = HostFacts.Read();
        var document = new
        {
            benchmark = "data", recipe = Request.Recipe, data = Request.Data.Root, layout = Request.Data.Layout, batch = Request.BatchSize,
            images_per_second = best.ImagesPerSecond, images_per_second_per_core = best.ImagesPerSecondPerCore,
            runs = Rows.Select(r => new
            {
                workers = r.Ours.Workers, images = r.Ours.Images, seconds = r.Ours.Seconds, images_per_second = r.Ours.ImagesPerSecond,
                images_per_second_per_core = r.Ours.ImagesPerSecondPerCore, peer_images_per_second = r.PeerImagesPerSecond, ratio_per_core = r.RatioPerCore,
            }),
            machine = new { host.OperatingSystem, host.LogicalCores, dotnet = host.DotnetVersion, libvips = MimFlow.Data.Decoding.LibvipsSettings.Version },
        };
        return JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary><c>mimflow bench data</c>: the peer first on the same files, then ours with each worker count.</summary>
public static class DataBench
{
    public static async Task<DataBenchResult> RunAsync(DataBenchRequest request, Action<string>? say = null, CancellationToken cancellationToken = default)
    {
        request.Validate();
        var peer = request.Peer is { } script
            ? await Peers.DataAsync(request.Python, script, request.Data.Root, request.Images, request.Workers, cancellationToken)
            : new PeerData(new Dictionary<int, double>(), []);
        foreach (string line in peer.Lines) say?.Invoke($"  peer: {line}");
        var recipe = RecipeCatalog.ByName(request.Recipe);
        int images = Math.Min(request.Images, request.Data.Count);
        var rows = new List<DataBenchRow>();
        foreach (int workers in request.Workers)
        {
            say?.Invoke($"mimflow: {workers} worker(s), {images} images …");
            var ours = await LoaderBenchmark.RunAsync(request.Data, recipe, workers, images, request.BatchSize, cancellationToken);
            rows.Add(new DataBenchRow(ours, peer.ImagesPerSecond.TryGetValue(workers, out double rate) ? rate : null));
        }
        return new DataBenchResult(request, rows, peer.Lines);
    }
}
