using System.CommandLine;
using System.Globalization;
using MimFlow.Benchmarks;
using MimFlow.Core.IO;
using MimFlow.Data.Augment;
using MimFlow.Precompute.Tokenize;
using MimFlow.Training.Benchmarks;
using MimFlow.Training.Distributed;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>The options of <c>mimflow bench</c> (the suite); only what the user typed is applied onto <see cref="SuiteOptions"/>.</summary>
internal sealed class SuiteCommandOptions
{
    private static readonly SuiteOptions Defaults = new();

    public Option<bool> Short { get; } = new("--short") { Description = "CI's form: small sizes (about a minute on 2 cores)" };
    public Option<int?> Repeats { get; } = new("--repeats") { Description = $"Measurements per stage; the median is the figure (default {Defaults.Repeats})" };
    public DeviceOption Device { get; } = new();
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };
    public Option<string?> Stages { get; } = new("--stages") { Description = $"Comma-separated subset of: {string.Join(", ", BenchSuite.StageNames)}" };
    public Option<string?> TrainModel { get; } = new("--train-model") { Description = "Model of the train-step stage (default: beit-base on cuda, beit-tiny on cpu)" };
    public Option<string?> Work { get; } = new("--work") { Description = $"Scratch folder for the generated data, models and shards, replaced (default {Defaults.WorkDirectory})" };
    public Option<string?> Peers { get; } = new("--peers") { Description = "Folder with peer_beit_step.py and peer_data.py: run them in the same invocation and add their rows (GPU form)" };
    public Option<string?> Python { get; } = new("--python") { Description = $"Python for the peers (default {Defaults.Python})" };
    public Option<string?> Json { get; } = new("--json") { Description = "Write every figure (samples, medians, ratios, peak memory, device, versions) as JSON to this file" };
    public Option<string?> Results { get; } = new("--results") { Description = "Use the figures of an earlier --json file instead of measuring" };
    public Option<string?> Check { get; } = new("--check") { Description = "Baseline (ops/bench/baseline.json): print stage, baseline, now, change; exit 1 when a stage falls below its tolerance" };
    public Option<string?> Accept { get; } = new("--accept") { Description = "Write this run's ratios as a new baseline file" };
    public Option<double?> Tolerance { get; } = new("--tolerance") { Description = $"Tolerance written with --accept, the relative drop allowed (default {BenchBaseline.DefaultTolerance})" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Short, Repeats, Device.Option, Workers, Stages, TrainModel, Work, Json, Results, Check, Accept, Tolerance, Peers, Python })
            command.Options.Add(option);
    }

    public SuiteOptions Request(ParseResult parsed) => Defaults with
    {
        Short = parsed.GetValue(Short), Repeats = parsed.GetValue(Repeats) ?? Defaults.Repeats, Workers = parsed.GetValue(Workers) ?? Defaults.Workers,
        Stages = parsed.GetValue(Stages)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal),
        TrainModel = parsed.GetValue(TrainModel) ?? Defaults.TrainModel, WorkDirectory = parsed.GetValue(Work) ?? Defaults.WorkDirectory,
        PeersDirectory = parsed.GetValue(Peers) ?? Defaults.PeersDirectory, Python = parsed.GetValue(Python) ?? Defaults.Python,
    };
}

/// <summary>The options of <c>mimflow bench data</c>; only what the user typed is applied onto <see cref="DataBenchRequest"/>'s defaults.</summary>
internal sealed class DataBenchOptions
{
    /// <summary>Only its defaults are read: it has no dataset.</summary>
    private static readonly DataBenchRequest Defaults = new(Data: null!);

    public DataOptions Data { get; } = new();
    public Option<string?> Workers { get; } = new("--workers") { Description = "Worker counts to measure, e.g. 1,2 (default: 1 and the processor count)" };
    public Option<int?> Images { get; } = new("--images") { Description = $"Images per measurement (default {Defaults.Images})" };
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Batch size (default {Defaults.BatchSize})" };
    public Option<string?> Recipe { get; } = FinetuneOptions.NullableChoice("--recipe",
        $"pretrain (the peer's recipe), pretrain-two-view, multi-crop, finetune, eval or segmentation (--layout ade20k); default {Defaults.Recipe}", [.. RecipeCatalog.Names]);
    public Option<string?> Json { get; } = new("--json") { Description = "Write the results as JSON to this file" };
    public Option<string?> Peer { get; } = new("--peer") { Description = "torchvision+PIL peer script (../shared/peers/peer_data.py), run on the same folder first" };
    public Option<string?> PeerRecipes { get; } = new("--peer-recipes") { Description = $"The peer for the other recipes and PIL's decode-only rate (default {DataBenchRequest.DefaultPeerRecipes} when present)" };
    public Option<string?> Python { get; } = new("--python") { Description = $"Python with torch, torchvision and PIL for the peer (default {Defaults.Python})" };
    public Option<string?> Pin { get; } = new("--pin") { Description = "CPU list (taskset -c), e.g. 1: the peers first, then this process, all pinned to these cores" };
    public Option<bool> Stages { get; } = new("--stages") { Description = "Also measure each stage's CPU per image on one thread (header, decode, resample, jitter, normalise, collate, loader overhead)" };

    public void AddTo(Command command)
    {
        Data.AddTo(command);
        foreach (var option in new Option[] { Workers, Images, Batch, Recipe, Json, Peer, PeerRecipes, Python, Pin, Stages }) command.Options.Add(option);
    }

    /// <summary>Opens the dataset (its listing is part of the request).</summary>
    public DataBenchRequest Request(ParseResult parsed)
    {
        var request = new DataBenchRequest(Data.Open(parsed));
        return request with
        {
            Workers = parsed.GetValue(Workers) is { } counts ? WorkerCounts(counts) : request.Workers, Images = parsed.GetValue(Images) ?? request.Images,
            BatchSize = parsed.GetValue(Batch) ?? request.BatchSize, Recipe = parsed.GetValue(Recipe) ?? request.Recipe, Peer = parsed.GetValue(Peer) ?? request.Peer,
            PeerRecipes = parsed.GetValue(PeerRecipes) ?? request.PeerRecipes, Python = parsed.GetValue(Python) ?? request.Python,
            Pin = parsed.GetValue(Pin) ?? request.Pin, Stages = parsed.GetValue(Stages) || request.Stages,
        };
    }

    private static int[] WorkerCounts(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries)
        .Select(w => int.TryParse(w, CultureInfo.InvariantCulture, out int n) && n > 0 ? n : throw new UsageException($"--workers takes positive counts like 1,2 (got '{w}')"))
        .ToArray();
}

/// <summary>
/// The options of <c>mimflow bench tokenize</c>: the dataset and models as <c>mimflow tokenize</c> takes them
/// (<see cref="TokenizeOptions"/>), and the images; only what the user typed is applied onto <see cref="TokenizeBenchmarkRequest"/>'s defaults.
/// </summary>
internal sealed class TokenizeBenchOptions
{
    private static readonly TokenizeBenchmarkRequest Defaults = TokenizeBenchmarkRequest.For("");

    public TokenizeOptions Tokenize { get; } = new();
    public Option<int?> Images { get; } = new("--images") { Description = $"Images to pre-tokenize, and the forward-only equivalent (default {Defaults.Images})" };
    public Option<string?> Json { get; } = new("--json") { Description = "Write the results as JSON to this file" };

    public void AddTo(Command command)
    {
        Tokenize.Data.AddTo(command);
        foreach (var option in Tokenize.Shared.Append(Images).Append(Json)) command.Options.Add(option);
    }

    /// <summary>The request without its device (<see cref="TokenizeOptions.Device"/>, resolved by the command: it loads the backend).</summary>
    public TokenizeBenchmarkRequest Request(ParseResult parsed)
    {
        var request = TokenizeBenchmarkRequest.For(parsed.GetRequiredValue(Tokenize.Data.Data));
        return request with { Tokenize = Tokenize.ApplyShared(parsed, request.Tokenize), Images = parsed.GetValue(Images) ?? request.Images };
    }
}

/// <summary>
/// The options of <c>mimflow bench train</c>; only what the user typed is applied onto <see cref="TrainBenchRequest"/>'s
/// defaults (the step's: <see cref="TrainStepRequest"/>).
/// </summary>
internal sealed class TrainBenchOptions
{
    private static readonly TrainBenchRequest Defaults = new();

    /// <summary>--dtype's names of the compute types.</summary>
    private static readonly Dictionary<string, TorchSharp.torch.ScalarType> ComputeTypes = new(StringComparer.Ordinal)
    {
        ["bf16"] = TorchSharp.torch.ScalarType.BFloat16, ["fp32"] = TorchSharp.torch.ScalarType.Float32,
    };

    public Option<string?> Model { get; } = new("--model") { Description = $"Architecture (default {Defaults.Step.Model})" };
    public Option<string?> Objective { get; } = FinetuneOptions.NullableChoice("--objective", "beit (the peer's step; the only one)", "beit");
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per step (default {Defaults.Step.BatchSize})" };
    public Option<string?> Dtype { get; } = FinetuneOptions.NullableChoice("--dtype",
        $"Compute type: bf16 (fp32 masters) or fp32 (default {ComputeTypes.First(t => t.Value == Defaults.Step.ComputeType).Key})", [.. ComputeTypes.Keys]);
    public Option<int?> Steps { get; } = new("--steps") { Description = $"Timed steps, after {Defaults.Step.WarmupSteps} warmup steps (default {Defaults.Step.Steps})" };
    public DeviceOption Device { get; } = new();
    public Option<double?> PeakTflops { get; } = new("--peak-tflops") { Description = $"Dense peak of the device for MFU (default: the known peak, {DevicePeaks.HopperDenseBf16} bf16 on H100/H200)" };
    public Option<string?> Peer { get; } = new("--peer") { Description = "../shared/peers/peer_beit_step.py, run in the same invocation" };
    public Option<string?> Python { get; } = new("--python") { Description = $"Python with torch and timm for the peer (default {Defaults.Python})" };
    public Option<string?> Json { get; } = new("--json") { Description = "Write the results as JSON to this file" };
    public Option<int?> World { get; } = new Option<int?>("--world")
    {
        Description = "Data-parallel scaling: the step at 1 and N ranks (mpirun -np 1 and -np N, each rank --batch/N images), step time, scaling efficiency and all-reduce time",
    }.InRange(1, 4096);

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Model, Objective, Batch, Dtype, Steps, Device.Option, PeakTflops, Peer, Python, Json, World }) command.Options.Add(option);
    }

    /// <summary>The request without its device (<see cref="Device"/>, resolved by the command: it loads the backend).</summary>
    public TrainBenchRequest Request(ParseResult parsed)
    {
        var step = Defaults.Step;
        return Defaults with
        {
            Step = step with
            {
                Model = parsed.GetValue(Model) ?? step.Model, BatchSize = parsed.GetValue(Batch) ?? step.BatchSize, Steps = parsed.GetValue(Steps) ?? step.Steps,
                ComputeType = parsed.GetValue(Dtype) is { } dtype ? ComputeTypes[dtype] : step.ComputeType, PeakTflops = parsed.GetValue(PeakTflops) ?? step.PeakTflops,
            },
            Peer = parsed.GetValue(Peer) ?? Defaults.Peer, Python = parsed.GetValue(Python) ?? Defaults.Python,
        };
    }
}

/// <summary><c>mimflow bench …</c>: throughput with the peer measured in the same run.</summary>
internal static class BenchCommand
{
    public static Command Create(CliContext context)
    {
        var options = new SuiteCommandOptions();
        var bench = new Command("bench", "Throughput of every stage (decode, shard write/read, feeder, tokenizer, train step, train end-to-end) as medians and as ratios to same-run references; --check compares with a baseline. Subcommands: one stage next to its peer");
        options.AddTo(bench);
        bench.SetAction(async (parsed, cancellationToken) =>
        {
            SuiteResult result;
            if (parsed.GetValue(options.Results) is { } earlier) result = SuiteJson.Read(earlier);
            else
            {
                var suite = options.Request(parsed);
                try { suite.Validate(); }
                catch (ArgumentException e) { throw new UsageException(e.Message); }
                result = await new BenchSuite(suite with { Device = options.Device.Resolve(parsed) }, context.Log).RunAsync(cancellationToken);
            }
            RenderSuite(context.Console, result);
            if (parsed.GetValue(options.Json) is { } jsonPath) AtomicFile.WriteAllText(jsonPath, SuiteJson.Write(result));
            if (parsed.GetValue(options.Accept) is { } acceptPath)
            {
                AtomicFile.WriteAllText(acceptPath, BenchBaseline.Accept(result, parsed.GetValue(options.Tolerance) ?? BenchBaseline.DefaultTolerance).ToJson());
                context.Console.WriteLine($"wrote the baseline {acceptPath}");
            }
            if (parsed.GetValue(options.Check) is not { } baselinePath) return 0;
            var baseline = BenchBaseline.Read(baselinePath);
            if (baseline.Form != result.Form)
                context.Console.WriteLine($"note: the baseline is the {baseline.Form} form, this run the {result.Form} form; ratios compare less well");
            var checks = BaselineCheck.Compare(baseline, result, subset: parsed.GetValue(options.Stages) is not null);
            RenderCheck(context.Console, baselinePath, checks);
            var regressed = checks.Where(c => c.Regressed).ToList();
            if (regressed.Count == 0) return 0;
            context.Error.WriteLine($"mimflow: regression against {baselinePath}: {string.Join(", ", regressed.Select(c => c.Now is null ? $"{c.Stage} (not measured)" : $"{c.Stage} {c.Change:+0.0%;-0.0%}"))}");
            return MimFlowCli.Failure;
        });
        bench.Subcommands.Add(CreateData(context));
        bench.Subcommands.Add(CreateTokenize(context));
        bench.Subcommands.Add(CreateTrain(context));
        return bench;
    }

    private static void RenderSuite(IAnsiConsole console, SuiteResult result)
    {
        var table = new Table().Title($"mimflow bench ({result.Form} form) on {result.Device}: {string.Join(", ", result.References.Select(r => $"{r.Key} {r.Value:F1}"))}")
            .AddColumns("stage", "median", "ratio", "vs", "peak MiB", "samples");
        foreach (var stage in result.Stages)
            table.AddRow(new Text(stage.Stage), new Text($"{stage.Median:F1} {stage.Unit}"), new Text($"{stage.Ratio:F3}"), new Text(stage.Reference),
                new Text($"{stage.PeakMemoryBytes / 1048576.0:F0}" + (stage.DeviceMemoryBytes is long d ? $" (GPU {d / 1048576.0:F0})" : "")),
                new Text(string.Join(" ", stage.Samples.Select(v => v.ToString("F1", CultureInfo.InvariantCulture)))));
        foreach (var peer in result.Peers ?? [])
            table.AddRow(new Text($"peer {peer.Stage} {peer.Mode}"), new Text($"{peer.Value:F1} {peer.Unit}"), new Text($"ours/peer {peer.OursOverPeer:F2}"), new Text("-"),
                new Text(peer.Memory ?? "-"), new Text("1"));
        console.Write(table);
    }

    private static void RenderCheck(IAnsiConsole console, string baselinePath, IReadOnlyList<StageCheck> checks)
    {
        var table = new Table().Title($"bench --check {baselinePath}").AddColumns("stage", "baseline", "now", "change", "tolerance", "status");
        foreach (var c in checks)
            table.AddRow(new Text(c.Stage), new Text($"{c.Baseline:F3}"), new Text(c.Now is double now ? $"{now:F3}" : "not measured"),
                new Text(c.Change is double change ? change.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture) : "-"), new Text($"-{c.Tolerance:P0}"),
                new Text(c.Regressed ? "REGRESSED" : "ok"));
        console.Write(table);
    }

    private static Command CreateTrain(CliContext context)
    {
        var options = new TrainBenchOptions();
        var command = new Command("train", "A BEiT training step on synthetic batches (img/s, step time, MFU), its bf16 gradients checked against fp32, next to the PyTorch peer");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            if (parsed.GetValue(options.World) is int ranks && ranks > 1 && !LaunchEnvironment.FromProcess().IsDistributed)
                return await BenchScaling.RunAsync(context, parsed, ranks, request.Step.BatchSize, parsed.GetValue(options.Json), cancellationToken);
            var step = request.Step with { Device = options.Device.Resolve(parsed) };
            request = request with { Step = step };
            // Set only for the ranks bench train --world starts (the backend is loaded by now, through --device).
            if (Environment.GetEnvironmentVariable(TrainScaling.ThreadsVariable) is { } threads && int.TryParse(threads, out int perRank) && perRank > 0)
                TorchSharp.torch.set_num_threads(perRank);
            context.Console.MarkupLineInterpolated($"mimflow: {step.Model} batch {step.BatchSize} {step.ComputeType} on {step.Device ?? TorchSharp.torch.CPU} …");
            if (LaunchEnvironment.FromProcess().IsDistributed || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(Collectives.Variable)))
                return await DataParallelLaunch.RunAsync(parsed, step.Device, (collective, rankDevice) =>
                {
                    var ranked = TrainStepBenchmark.Run(step with { Device = rankDevice }, cancellationToken, collective);
                    if (collective.Writes() && parsed.GetValue(options.Json) is { } rankedJson) AtomicFile.WriteAllText(rankedJson, TrainScaling.RankJson(ranked));
                    return Task.FromResult(0);
                });
            var (result, peerLines) = await TrainBench.RunAsync(request, cancellationToken);
            var table = new Table().Title($"bench train: {result.Model}, batch {result.BatchSize}, {result.Device}").AddColumns("run", "img/s", "step ms", "MFU", "note");
            table.AddRow(new Text($"mimflow {result.ComputeType}"), new Text($"{result.ImagesPerSecond:F1}"), new Text($"{result.StepMilliseconds:F1}"),
                new Text(result.Mfu is double m ? $"{m:P1}" : "-"),
                new Text($"loss fp32 {result.LossFp32:F4} vs {result.LossCompute:F4}; gradient rel. error {result.GradientRelativeError:E2}"
                         + (result.DeviceMemoryInUseBytes is long bytes ? $"; device memory in use {bytes / 1073741824.0:F1} GiB" : "")));
            foreach (var line in peerLines)
                table.AddRow(new Text($"peer {line.Mode}"), new Text($"{line.ImagesPerSecond:F1}"), new Text($"{line.StepMilliseconds:F1}"), new Text("-"),
                    new Text($"peak {line.PeakMemory}; ratio ours/peer {result.ImagesPerSecond / line.ImagesPerSecond:F2}"));
            context.Console.Write(table);
            // A rank of bench train --world writes the scaling run's record; a plain run the report with its peer.
            bool scalingRank = Environment.GetEnvironmentVariable(TrainScaling.ThreadsVariable) is not null;
            if (parsed.GetValue(options.Json) is { } jsonPath) AtomicFile.WriteAllText(jsonPath, scalingRank ? TrainScaling.RankJson(result) : BenchReports.Train(result, peerLines));
            return 0;
        });
        return command;
    }

    private static Command CreateTokenize(CliContext context)
    {
        var options = new TokenizeBenchOptions();
        var command = new Command("tokenize", "Pre-tokenization img/s and the share of time the model waited for input, next to the models' forward-only img/s on the same device");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            request = request with { Tokenize = request.Tokenize with { Device = options.Tokenize.Device.Resolve(parsed) } };
            context.Console.MarkupLineInterpolated($"mimflow: forward-only, then pre-tokenization of {request.Images} images (each warmed up until the JIT is quiet) …");
            var result = await TokenizeBenchmark.RunAsync(request, cancellationToken);
            var table = new Table().Title($"bench tokenize ({result.Arithmetic})").AddColumns("forward-only img/s", "pre-tokenization img/s", "ratio", "model waited for input");
            table.AddRow($"{result.ForwardOnlyImagesPerSecond:F1}", $"{result.PipelineImagesPerSecond:F1}", $"{result.Ratio:F2}", $"{result.InputWaitShare:P1}");
            context.Console.Write(table);
            context.Console.MarkupLineInterpolated($"{result.Images} images timed on each side, after {result.WarmUpSteps} forward-only warm-up steps and {result.WarmUpImages} warm-up images through the pipeline");
            if (parsed.GetValue(options.Json) is { } jsonPath) AtomicFile.WriteAllText(jsonPath, BenchReports.Tokenize(request.Tokenize, result));
            return 0;
        });
        return command;
    }

    private static Command CreateData(CliContext context)
    {
        var options = new DataBenchOptions();
        var command = new Command("data", "Decode + augment + collate of a recipe (images/s, per core) next to torchvision+PIL on the same files and the decode-only rate of both, optionally pinned and stage by stage");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            try { request.Validate(); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            if (request.Pin is { } cores && Environment.GetEnvironmentVariable(PinnedVariable) != cores)
                return await RunPinnedAsync(cores, cancellationToken);
            var result = await DataBench.RunAsync(request, context.Log, cancellationToken);
            string decodeTitle = result.PilDecode is double pil ? $"; decode only: PIL {pil:F1} img/s" : "";
            if (result.Decode is { } decode) decodeTitle += $", mimflow {decode.Ours:F1} img/s (libvips {decode.Libvips:F1})";
            var table = new Table().Title($"bench data: {request.Recipe} recipe, float32 batches{(request.Pin is { } p ? $", pinned to CPU {p}" : "")}{decodeTitle}")
                .AddColumns("workers", "mimflow img/s", "per core", "CPU ms/img", "peer img/s", "peer per worker", "ratio per core", "of PIL decode");
            foreach (var row in result.Rows)
                table.AddRow(row.Ours.Workers.ToString(CultureInfo.InvariantCulture), $"{row.Ours.ImagesPerSecond:F1}", $"{row.Ours.ImagesPerSecondPerCore:F1}",
                    $"{row.Ours.CpuSecondsPerImage * 1e3:F2}",
                    row.PeerImagesPerSecond?.ToString("F1", CultureInfo.InvariantCulture) ?? "-", row.PeerPerWorker?.ToString("F1", CultureInfo.InvariantCulture) ?? "-",
                    row.RatioPerCore?.ToString("F2", CultureInfo.InvariantCulture) ?? "-", result.OfDecodeLimit(row)?.ToString("F2", CultureInfo.InvariantCulture) ?? "-");
            context.Console.Write(table);
            if (result.Stages is { } costs)
            {
                var stageTable = new Table().Title($"where one image's time goes ({request.Recipe}, one thread, CPU µs per image)").AddColumns("stage", "µs", "what");
                foreach (var cost in costs) stageTable.AddRow(new Text(cost.Stage), new Text(cost.MicrosecondsPerImage.ToString("F1", CultureInfo.InvariantCulture)), new Text(cost.What));
                context.Console.Write(stageTable);
            }
            if (parsed.GetValue(options.Json) is { } jsonPath)
            {
                AtomicFile.WriteAllText(jsonPath, result.ToJson());
                context.Console.MarkupLineInterpolated($"results in {jsonPath}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>Set in the pinned copy of the process, to the cores it was started on.</summary>
    private const string PinnedVariable = "MIMFLOW_PINNED";

    /// <summary>
    /// --pin: the same command again under <c>taskset -c CORES</c>, so that the runtime starts on those cores (it sizes
    /// its thread pool and spin-waiting by the cores it may use: a process pinned only after start spins as if it had
    /// the others) and the peers it starts inherit them. Its output is this command's; its exit code is returned.
    /// </summary>
    private static async Task<int> RunPinnedAsync(string cores, CancellationToken cancellationToken)
    {
        string[] arguments = Environment.GetCommandLineArgs();
        string process = Environment.ProcessPath ?? throw new InvalidOperationException("the program's path is unknown");
        var start = new System.Diagnostics.ProcessStartInfo("taskset") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(cores);
        start.ArgumentList.Add(process);
        // Under `dotnet MimFlow.Cli.dll`, the first argument is the assembly; under the app host, the host itself.
        bool host = !Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.OrdinalIgnoreCase);
        foreach (string argument in host ? arguments.Skip(1) : arguments) start.ArgumentList.Add(argument);
        start.Environment[PinnedVariable] = cores;
        using var child = System.Diagnostics.Process.Start(start) ?? throw new IOException("could not start taskset");
        try
        {
            await child.WaitForExitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            child.Kill(entireProcessTree: true);
            throw;
        }
        return child.ExitCode;
    }
}
