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

    /// <summary>
    /// <c>ops/bench/peer_recipes.py</c>: the peer for the other recipes and PIL's decode-only rate; null: the one
    /// beside <see cref="Peer"/>'s working copy if it exists (ops/bench/peer_recipes.py under the current folder).
    /// </summary>
    public string? PeerRecipes { get; init; }
    public string Python { get; init; } = "/usr/bin/python3";

    /// <summary>CPU list for <c>taskset -c</c> (e.g. "1"): the peers and this process are pinned to it, the peers first.</summary>
    public string? Pin { get; init; }

    /// <summary>Also measure where one image's time goes, stage by stage (<see cref="DataStages"/>).</summary>
    public bool Stages { get; init; }

    /// <summary>The recipes script: the given one, else ops/bench/peer_recipes.py if present.</summary>
    public string? PeerRecipesScript => PeerRecipes ?? (File.Exists(DefaultPeerRecipes) ? DefaultPeerRecipes : null);

    public const string DefaultPeerRecipes = "ops/bench/peer_recipes.py";

    public void Validate()
    {
        if (Workers.Count == 0 || Workers.Any(w => w < 1)) throw new ArgumentException($"worker counts must be positive (got {string.Join(",", Workers)})");
        if (Pin is { } pin && !System.Text.RegularExpressions.Regex.IsMatch(pin, @"^\d+(-\d+)?(,\d+(-\d+)?)*$"))
            throw new ArgumentException($"--pin takes a CPU list for taskset, like 1 or 0,1 or 0-3 (got '{pin}')");
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

/// <param name="PilDecode">PIL's full decode of the same files (images/s), measured in the same run; null without the recipes script.</param>
/// <param name="Decode">Our full decode of the same files (managed decoder, libvips for the rest) and libvips alone.</param>
/// <param name="Stages">Per-stage CPU per image (with <see cref="DataBenchRequest.Stages"/>).</param>
public sealed record DataBenchResult(DataBenchRequest Request, IReadOnlyList<DataBenchRow> Rows, IReadOnlyList<string> PeerLines,
    double? PilDecode = null, DecodeOnly? Decode = null, IReadOnlyList<StageCost>? Stages = null)
{
    /// <summary>Ours over PIL's decode-only rate, per core (the pipeline's share of the decode limit).</summary>
    public double? OfDecodeLimit(DataBenchRow row) => PilDecode is > 0 ? row.Ours.ImagesPerSecondPerCore / PilDecode.Value : null;

    /// <summary><c>--json</c>: the figures with the machine they were measured on.</summary>
    public string ToJson()
    {
        var best = Rows.MaxBy(r => r.Ours.Workers)!.Ours;
        var host = HostFacts.Read();
        var document = new
        {
            benchmark = "data", recipe = Request.Recipe, data = Request.Data.Root, layout = Request.Data.Layout, batch = Request.BatchSize,
            images_per_second = best.ImagesPerSecond, images_per_second_per_core = best.ImagesPerSecondPerCore,
            pin = Request.Pin,
            runs = Rows.Select(r => new
            {
                workers = r.Ours.Workers, images = r.Ours.Images, seconds = r.Ours.Seconds, images_per_second = r.Ours.ImagesPerSecond,
                images_per_second_per_core = r.Ours.ImagesPerSecondPerCore, peer_images_per_second = r.PeerImagesPerSecond, ratio_per_core = r.RatioPerCore,
                of_pil_decode_per_core = OfDecodeLimit(r), cpu_milliseconds_per_image = r.Ours.CpuSecondsPerImage * 1e3,
            }),
            decode_only = new
            {
                pil_images_per_second = PilDecode, ours_images_per_second = Decode?.Ours, libvips_images_per_second = Decode?.Libvips,
                managed_share = Decode?.ManagedShare, images = Decode?.Images,
            },
            stages = Stages?.Select(st => new { stage = st.Stage, microseconds_per_image = st.MicrosecondsPerImage, what = st.What }),
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
        string? pin = request.Pin;
        if (pin is not null)
        {
            // Pinned first: every thread of this process, and every child it starts, then runs on these cores only.
            await Peers.PinSelfAsync(pin, cancellationToken);
            say?.Invoke($"pinned to CPU {pin} (taskset -a -c -p); peers run under taskset -c {pin}");
        }
        string? recipes = request.PeerRecipesScript;
        var peer = new PeerData(new Dictionary<int, double>(), []);
        if (request.Peer is { } script)
        {
            if (request.Recipe == "pretrain")
                peer = await Peers.DataAsync(request.Python, script, request.Data.Root, request.Images, request.Workers, cancellationToken, pin);
            else if (recipes is not null)
            {
                var rates = new Dictionary<int, double>();
                var lines = new List<string>();
                foreach (int w in request.Workers)
                {
                    var one = await Peers.RecipeAsync(request.Python, recipes, request.Data.Root, request.Images, w, PeerRecipeName(request.Recipe), cancellationToken, pin);
                    foreach (var (k, v) in one.ImagesPerSecond) rates[k] = v;
                    lines.AddRange(one.Lines);
                }
                peer = new PeerData(rates, lines);
            }
            else say?.Invoke($"  peer: no {DataBenchRequest.DefaultPeerRecipes} (--peer-recipes) for the {request.Recipe} recipe");
        }
        foreach (string line in peer.Lines) say?.Invoke($"  peer: {line}");
        double? pilDecode = null;
        if (request.Peer is not null && recipes is not null)
        {
            var (rate, line) = await Peers.DecodeOnlyAsync(request.Python, recipes, ImageFolderOf(request), request.Images, cancellationToken, pin);
            pilDecode = rate;
            say?.Invoke($"  peer: {line}");
        }
        var decode = await DataStages.DecodeOnlyAsync(request.Data, request.Images, cancellationToken);
        say?.Invoke($"  mimflow decode only: {decode.Ours:F1} img/s (managed decoder took {decode.ManagedShare:P0} of {decode.Images} files; libvips alone {decode.Libvips:F1} img/s)");
        var recipe = RecipeCatalog.ByName(request.Recipe);
        int images = Math.Min(request.Images, request.Data.Count);
        // Untimed warm-up (4 batches): the runtime compiles the loader's methods to their final tier in the first
        // seconds of a process, which a run of a few seconds would otherwise count; training runs for hours.
        await LoaderBenchmark.RunAsync(request.Data, recipe, request.Workers[0], Math.Min(images, 4 * request.BatchSize), request.BatchSize, cancellationToken);
        var rows = new List<DataBenchRow>();
        foreach (int workers in request.Workers)
        {
            say?.Invoke($"mimflow: {workers} worker(s), {images} images …");
            var ours = await LoaderBenchmark.RunAsync(request.Data, recipe, workers, images, request.BatchSize, cancellationToken);
            rows.Add(new DataBenchRow(ours, peer.ImagesPerSecond.TryGetValue(workers, out double rate) ? rate : null));
        }
        IReadOnlyList<StageCost>? stages = null;
        if (request.Stages)
        {
            say?.Invoke("mimflow: per-stage costs on one thread …");
            stages = await DataStages.MeasureAsync(request.Data, request.Recipe, images, request.BatchSize, cancellationToken);
        }
        return new DataBenchResult(request, rows, peer.Lines, pilDecode, decode, stages);
    }

    private static string PeerRecipeName(string recipe) => recipe;

    /// <summary>Where the images are for PIL's decode loop: the ADE20K images folder, else the dataset root.</summary>
    private static string ImageFolderOf(DataBenchRequest request) =>
        request.Data.Layout == "ade20k" ? Path.Combine(request.Data.Root, "ADEChallengeData2016", "images", "training") : request.Data.Root;
}
