using System.Diagnostics;
using MimFlow.Core.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using MimFlow.Models.Interop;
using MimFlow.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Training.Benchmarks;
using MimFlow.Training.Feeding;
using MimFlow.Training.Pretraining;
using NetVips;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Benchmarks;

/// <summary>What <c>mimflow bench</c> measures, and how.</summary>
public sealed record SuiteOptions
{
    /// <summary>CI's form: small sizes, a minute or so on 2 cores.</summary>
    public bool Short { get; init; }

    /// <summary>Measurements per stage; the median is the figure.</summary>
    public int Repeats { get; init; } = 3;

    /// <summary>Scratch folder for the generated data, models and shards (replaced at the start).</summary>
    public string WorkDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "mimflow-bench");

    /// <summary>Compute stages and the matmul reference run here (null: the CPU).</summary>
    public Device? Device { get; init; }

    public int Workers { get; init; } = Environment.ProcessorCount;

    /// <summary>A subset of <see cref="BenchSuite.StageNames"/>; null: every stage.</summary>
    public IReadOnlySet<string>? Stages { get; init; }

    /// <summary>The train-step model (null: beit-base on CUDA, beit-tiny on the CPU).</summary>
    public string? TrainModel { get; init; }

    /// <summary>A folder with peer_beit_step.py and peer_data.py to run in the same invocation (the GPU form); null: none.</summary>
    public string? PeersDirectory { get; init; }
    public string Python { get; init; } = "python3";

    public void Validate()
    {
        if (Repeats < 1) throw new ArgumentException($"the repeats must be at least 1 (got {Repeats})");
        if (Workers < 1) throw new ArgumentException($"the workers must be at least 1 (got {Workers})");
        foreach (string stage in Stages ?? new HashSet<string>())
            if (!BenchSuite.StageNames.Contains(stage)) throw new ArgumentException($"unknown stage '{stage}' (stages: {string.Join(", ", BenchSuite.StageNames)})");
    }
}

/// <summary>One stage's figure: the median of its repeats, and that median over its same-run reference.</summary>
/// <param name="Reference">cpu-decode (a fixed single-threaded libvips loop) for data stages, matmul for compute stages.</param>
public sealed record StageFigure(string Stage, string Unit, double Median, IReadOnlyList<double> Samples, string Reference, double Ratio,
    long PeakMemoryBytes, long? DeviceMemoryBytes, string Detail);

public sealed record SuiteResult(IReadOnlyList<StageFigure> Stages, IReadOnlyDictionary<string, double> References, string Form, string Device, IReadOnlyDictionary<string, string> Versions)
{
    public IReadOnlyList<PeerFigure>? Peers { get; init; }
}

/// <summary>A peer's figure for a stage, measured in the same invocation.</summary>
public sealed record PeerFigure(string Stage, string Mode, double Value, string Unit, double OursOverPeer, string? Memory, string Detail);

/// <summary>The suite's JSON file (<c>mimflow bench --json</c>), read back by <c>--results</c>.</summary>
public static class SuiteJson
{
    private static readonly System.Text.Json.JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    public static string Write(SuiteResult result) => System.Text.Json.JsonSerializer.Serialize(result, Json);

    public static SuiteResult Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such results file", path);
        try { return System.Text.Json.JsonSerializer.Deserialize<SuiteResult>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path}: empty results"); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path}: not a mimflow bench results file ({e.Message})", e); }
    }
}

/// <summary>
/// Every stage's throughput on one generated dataset, each figure also as a ratio to a reference measured in the same
/// run, so figures compare across machines and a slower machine does not read as a regression: data stages against a
/// fixed libvips decode loop, compute stages against a fixed matmul on the same device.
/// </summary>
public sealed class BenchSuite(SuiteOptions options, Action<string> say)
{
    public static IReadOnlyList<string> StageNames { get; } = ["decode", "shard-write", "shard-read", "feeder", "tokenizer-forward", "tokenize", "train-step", "train-e2e"];

    public const string CpuReference = "cpu-decode";
    public const string ComputeReference = "matmul";

    private int Images => options.Short ? 64 : 512;

    private bool Wanted(string stage) => options.Stages is null || options.Stages.Contains(stage);

    private Device Device => options.Device ?? CPU;

    public async Task<SuiteResult> RunAsync(CancellationToken cancellationToken)
    {
        options.Validate();
        var result = await MeasureAsync(cancellationToken);
        return options.PeersDirectory is { } peers ? result with { Peers = await RunPeersAsync(peers, result, cancellationToken) } : result;
    }

    /// <summary>The GPU form's peers: the BEiT step (eager and torch.compile) and torchvision+PIL decode, in this invocation.</summary>
    private async Task<IReadOnlyList<PeerFigure>> RunPeersAsync(string folder, SuiteResult result, CancellationToken cancellationToken)
    {
        var figures = new List<PeerFigure>();
        if (result.Stages.FirstOrDefault(s => s.Stage == "train-step") is { } step && File.Exists(Path.Combine(folder, "peer_beit_step.py")))
            foreach (var line in await Peers.TrainStepAsync(options.Python, Path.Combine(folder, "peer_beit_step.py"), Device.type == DeviceType.CUDA ? 128 : 8, cancellationToken))
                figures.Add(new PeerFigure("train-step", line.Mode, line.ImagesPerSecond, "img/s", step.Median / line.ImagesPerSecond, line.PeakMemory, $"peer_beit_step.py {line.Mode}"));
        if (result.Stages.FirstOrDefault(s => s.Stage == "decode") is { } decode && File.Exists(Path.Combine(folder, "peer_data.py")))
        {
            var peer = await Peers.DataAsync(options.Python, Path.Combine(folder, "peer_data.py"), Path.Combine(options.WorkDirectory, "data"), options.Short ? 64 : 512, [options.Workers], cancellationToken);
            foreach (string line in peer.Lines) say($"  peer: {line}");
            foreach (var (count, rate) in peer.ImagesPerSecond)
                figures.Add(new PeerFigure("decode", $"{count} workers", rate, "img/s", decode.Median / rate, null, "peer_data.py (torchvision + PIL)"));
        }
        return figures;
    }

    private async Task<SuiteResult> MeasureAsync(CancellationToken cancellationToken)
    {
        var backend = MimFlow.Torch.Backend.TorchBackend.EnsureLoaded();
        string root = Path.GetFullPath(options.WorkDirectory);
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        Directory.CreateDirectory(root);
        say($"generating {Images} images, a 224 px VQ-KD and its shards in {root} …");
        string data = Path.Combine(root, "data");
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.ImageNet, OutputDirectory = data, Images = Images, Classes = 8, MinSide = 200, MaxSide = 400, ValidationFraction = 0.1 },
            null, cancellationToken);
        var index = DatasetSource.Open(data, DatasetLayout.ImageNet);
        string tokenizer = Path.Combine(root, "vqkd");
        var tokenizerSpec = ModelCatalog.Spec("vqkd-tiny");
        using (var model = ModelCatalog.Create(tokenizerSpec, 0)) ModelDirectory.Save(tokenizer, tokenizerSpec, model);
        var tokenizeRequest = new TokenizeRequest
        {
            DataRoot = data, TokenizerDirectory = tokenizer, OutputDirectory = Path.Combine(root, "shards"), StoreImageMaxSide = 256,
            BatchSize = options.Short ? 16 : 64, DecodeWorkers = options.Workers, Device = Device, TargetShardBytes = 4L << 20,
        };
        await TokenizeJob.RunAsync(tokenizeRequest, cancellationToken: cancellationToken);
        string shards = tokenizeRequest.OutputDirectory;
        byte[] sampleJpeg = await index.ReadImageAsync(index[0], cancellationToken);

        var references = new Dictionary<string, double>
        {
            [CpuReference] = Median(Repeat(() => DecodeLoop(sampleJpeg, options.Short ? 40 : 200, options.Workers))),
            [ComputeReference] = Median(Repeat(() => MatmulGflops(Device, options.Short ? 10 : 50))),
        };
        say($"references: {CpuReference} {references[CpuReference]:F1} img/s, {ComputeReference} {references[ComputeReference]:F1} GFLOP/s on {Device}");

        var figures = new List<StageFigure>();
        // One measurement may give several stages' figures (the tokenize benchmark times forward-only and the whole
        // pipeline in one go), so each repeat runs once for all of them.
        async Task MeasureTogether(string[] stages, string unit, string reference, Func<Task<(double Value, string Detail)[]>> run)
        {
            if (!stages.Any(Wanted)) return;
            cancellationToken.ThrowIfCancellationRequested();
            ProcessMemory.ResetPeak();
            var samples = stages.Select(_ => new List<double>()).ToArray();
            var details = new string[stages.Length];
            for (int i = 0; i < options.Repeats; i++)
            {
                var results = await run();
                for (int k = 0; k < stages.Length; k++)
                {
                    samples[k].Add(results[k].Value);
                    details[k] = results[k].Detail;
                }
            }
            long peak = ProcessMemory.PeakBytes();
            long? deviceMemory = Device.type == DeviceType.CUDA ? MimFlow.Torch.Diagnostics.GpuInventory.Read().FirstOrDefault() is { } gpu ? gpu.TotalMemoryBytes - gpu.FreeMemoryBytes : null : null;
            for (int k = 0; k < stages.Length; k++)
            {
                if (!Wanted(stages[k])) continue;
                double median = Median(samples[k]);
                var figure = new StageFigure(stages[k], unit, median, samples[k], reference, median / references[reference], peak, deviceMemory, details[k]);
                figures.Add(figure);
                say($"{stages[k]} ({figures.Count}/{StageNames.Count(Wanted)}): {median:F1} {unit} (ratio {figure.Ratio:F3} to {reference}; {string.Join(", ", samples[k].Select(v => v.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))})");
            }
        }

        Task Measure(string stage, string unit, string reference, Func<Task<(double Value, string Detail)>> run) =>
            MeasureTogether([stage], unit, reference, async () => [await run()]);

        await Measure("decode", "img/s", CpuReference, async () =>
        {
            var r = await LoaderBenchmark.RunAsync(index, new PretrainRecipe(SecondViewSize: null), options.Workers, index.Count, options.Short ? 8 : 32, cancellationToken);
            return (r.ImagesPerSecond, $"pretraining recipe, {options.Workers} workers, float32 batches of {(options.Short ? 8 : 32)}");
        });

        var manifest = ShardManifest.Read(shards);
        // The rows are read beforehand, so shard-write times writing only; the feeder's reference decodes their images.
        var rows = new List<ShardRow>();
        if (Wanted("shard-write") || Wanted("feeder"))
            foreach (var shard in manifest.Shards)
                await foreach (var row in ShardReader.ReadAsync(Path.Combine(shards, shard.Name), cancellationToken)) rows.Add(row);
        await Measure("shard-write", "MB/s", CpuReference, async () =>
        {
            string path = Path.Combine(root, "write-bench", $"{Guid.NewGuid():N}.parquet");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var watch = Stopwatch.StartNew();
            await using var writer = await ShardFileWriter.CreateAsync(new ShardSchema(manifest.Columns), path, cancellationToken);
            foreach (var group in rows.Chunk(256)) await writer.WriteRowGroupAsync(group, cancellationToken);
            var file = await writer.CompleteAsync();
            double seconds = watch.Elapsed.TotalSeconds;
            File.Delete(path);
            return (file.Bytes / 1e6 / seconds, $"{rows.Count} rows, zstd, row groups of 256");
        });
        await Measure("shard-read", "MB/s", CpuReference, async () =>
        {
            var watch = Stopwatch.StartNew();
            long bytes = 0, count = 0;
            foreach (var shard in manifest.Shards)
            {
                bytes += shard.Bytes;
                await foreach (var _ in ShardReader.ReadAsync(Path.Combine(shards, shard.Name), cancellationToken)) count++;
            }
            return (bytes / 1e6 / watch.Elapsed.TotalSeconds, $"{count} rows");
        });
        // The feeder's ceiling is decoding the stored images: they are written out (<work>/stored) and decoded alone
        // in each repeat, by the managed decoder and, where Python has PIL, by PIL (ops/bench/peer_recipes.py).
        string stored = Wanted("feeder") ? await WriteStoredImagesAsync(rows, Path.Combine(root, "stored"), cancellationToken) : "";
        rows.Clear(); // not held through the feeder's peak-memory figure
        await Measure("feeder", "img/s", CpuReference, async () =>
        {
            var feeder = new ShardFeeder(shards, new FeederOptions { BatchSize = 16, DecodeWorkers = options.Workers, Masks = new BlockwiseMaskGenerator(14, 14, 75), ShuffleBuffer = 256 });
            var watch = Stopwatch.StartNew();
            long images = 0;
            await foreach (var batch in feeder.ReadEpochAsync(0, cancellationToken: cancellationToken))
                using (batch) images += batch.Count;
            double rate = images / watch.Elapsed.TotalSeconds;
            var storedIndex = DatasetSource.Open(stored, DatasetLayout.Folder);
            var decode = await DataStages.DecodeOnlyAsync(storedIndex, storedIndex.Count, cancellationToken);
            string pil;
            try
            {
                var (pilRate, _) = await Peers.DecodeOnlyAsync(options.Python, DataBenchRequest.DefaultPeerRecipes, stored, storedIndex.Count, cancellationToken);
                pil = $", {rate / pilRate:F2} of PIL's ({pilRate:F0} img/s)";
            }
            catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception)
            {
                pil = $"; PIL's decode-only rate not measured ({e.Message.Split('\n')[0]})";
            }
            string against = $"{rate / decode.Ours:F2} of the stored images' decode-only rate with the managed decoder ({decode.Ours:F0} img/s){pil}";
            say($"  feeder: {rate:F1} img/s, {against}");
            return (rate, $"stored JPEG decoded, augmentation replayed, blockwise masks, batches of 16; {against}");
        });

        await MeasureTogether(["tokenizer-forward", "tokenize"], "img/s", ComputeReference, async () =>
        {
            var benchmark = new TokenizeBenchmarkRequest(tokenizeRequest with { OutputDirectory = Path.Combine(root, "tokenize-bench") });
            var r = await TokenizeBenchmark.RunAsync(options.Short ? benchmark with { Images = 32 } : benchmark, cancellationToken);
            return [(r.ForwardOnlyImagesPerSecond, $"vqkd-tiny at 224, batch {tokenizeRequest.BatchSize}, {r.Arithmetic}"),
                (r.PipelineImagesPerSecond, $"decode + augment + vqkd-tiny + shard write; model waited for input {r.InputWaitShare:P0}")];
        });

        bool cuda = Device.type == DeviceType.CUDA;
        string trainModel = options.TrainModel ?? (cuda ? "beit-base" : "beit-tiny");
        int trainBatch = cuda ? 128 : options.Short ? 8 : 32;
        await Measure("train-step", "img/s", ComputeReference, () =>
        {
            var r = TrainStepBenchmark.Run(new TrainStepRequest
            {
                Model = trainModel, BatchSize = trainBatch, Steps = options.Short ? 2 : 10, WarmupSteps = options.Short ? 1 : 3, Device = Device,
                ComputeType = cuda ? ScalarType.BFloat16 : ScalarType.Float32,
            }, cancellationToken);
            return Task.FromResult((r.ImagesPerSecond, $"{trainModel} batch {trainBatch} {r.ComputeType}, synthetic batches, step {r.StepMilliseconds:F0} ms"));
        });
        await Measure("train-e2e", "img/s", ComputeReference, async () =>
        {
            string run = Path.Combine(root, "e2e", Guid.NewGuid().ToString("N"));
            var r = await Pretrainer.RunAsync(new PretrainRequest
            {
                Shards = shards, Objective = "beit", Model = "beit-tiny", OutputDirectory = run, Steps = options.Short ? 3 : 20, BatchSize = options.Short ? 8 : 32,
                CheckpointEvery = 1_000_000, Device = Device, DecodeWorkers = options.Workers, ShuffleBuffer = 256, WarmupSteps = 1,
            }, cancellationToken: cancellationToken);
            Directory.Delete(run, recursive: true);
            return (r.ImagesPerSecond, $"beit-tiny from the shards (feeder + prefetch + step), input-bound {r.InputBoundShare:P0}");
        });

        var versions = new Dictionary<string, string>
        {
            ["dotnet"] = Environment.Version.ToString(), ["libvips"] = MimFlow.Data.Decoding.LibvipsSettings.Version,
            ["torchsharp"] = backend.TorchSharpVersion, ["libtorch"] = backend.LibTorchVersion, ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
            ["cores"] = Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["gpu"] = MimFlow.Torch.Diagnostics.GpuInventory.Read().FirstOrDefault()?.Name ?? "none",
        };
        return new SuiteResult(figures, references, options.Short ? "short" : "full", Device.ToString(), versions);
    }

    private IEnumerable<double> Repeat(Func<double> measure) => Enumerable.Range(0, options.Repeats).Select(_ => measure()).ToList();

    /// <summary>The rows' stored images as JPEG files (one per image: the first row of each), for decode-only references.</summary>
    private static async Task<string> WriteStoredImagesAsync(IEnumerable<ShardRow> rows, string folder, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(folder);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var row in rows)
            if (row.Image is { } image && seen.Add(row.SampleId))
                await File.WriteAllBytesAsync(Path.Combine(folder, $"{seen.Count:D6}.jpg"), image, cancellationToken);
        return folder;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// The CPU reference: a fixed JPEG decoded and shrunk to 224 by libvips on as many threads as the data stages use,
    /// images/s; sharing their parallelism, it slows with them when other work takes cores, so the ratio holds.
    /// </summary>
    private static double DecodeLoop(byte[] jpeg, int iterations, int workers)
    {
        MimFlow.Data.Decoding.LibvipsSettings.ForGraphParallelism();
        var watch = Stopwatch.StartNew();
        Parallel.For(0, iterations * workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, iteration =>
        {
            using var image = Image.ThumbnailBuffer(jpeg, 224, height: 224, crop: Enums.Interesting.Centre);
            _ = image.WriteToMemory<byte>();
        });
        return iterations * workers / watch.Elapsed.TotalSeconds;
    }

    /// <summary>The compute reference: a fixed fp32 1024×1024 matmul chain on the device, GFLOP/s.</summary>
    private static double MatmulGflops(Device device, int iterations)
    {
        using var scope = NewDisposeScope();
        const int n = 1024;
        var generator = new Generator(0, device);
        var a = randn([n, n], generator: generator, device: device);
        var b = randn([n, n], generator: generator, device: device);
        _ = a.matmul(b).sum().item<float>();
        var watch = Stopwatch.StartNew();
        var c = a;
        for (int i = 0; i < iterations; i++) c = a.matmul(b);
        _ = c.sum().item<float>();
        return 2.0 * n * n * n * iterations / watch.Elapsed.TotalSeconds / 1e9;
    }
}
