using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using MimFlow.Cli.Benchmarks;
using MimFlow.Core.Diagnostics;
using MimFlow.Core.IO;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow bench …</c>: throughput with the peer measured in the same run.</summary>
internal static partial class BenchCommand
{
    public static Command Create(CliContext context)
    {
        var bench = new Command("bench", "Throughput of every stage (decode, shard write/read, feeder, tokenizer, train step, train end-to-end) as medians and as ratios to same-run references; --check compares with a baseline. Subcommands: one stage next to its peer");
        var shortForm = new Option<bool>("--short") { Description = "CI's form: small sizes (about a minute on 2 cores)" };
        var repeats = new Option<int>("--repeats") { Description = "Measurements per stage (the median is the figure)", DefaultValueFactory = _ => 3 };
        var device = new Option<string>("--device") { Description = "cpu or cuda (compute stages and the matmul reference)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var stages = new Option<string?>("--stages") { Description = $"Comma-separated subset of: {string.Join(", ", BenchSuite.StageNames)}" };
        var trainModel = new Option<string?>("--train-model") { Description = "Model of the train-step stage (default: beit-base on cuda, beit-tiny on cpu)" };
        var work = new Option<string>("--work") { Description = "Scratch folder for the generated data, models and shards (replaced)", DefaultValueFactory = _ => Path.Combine(Path.GetTempPath(), "mimflow-bench") };
        var json = new Option<string?>("--json") { Description = "Write every figure (samples, medians, ratios, peak memory, device, versions) as JSON to this file" };
        var results = new Option<string?>("--results") { Description = "Use the figures of an earlier --json file instead of measuring" };
        var check = new Option<string?>("--check") { Description = "Baseline (ops/bench/baseline.json): print stage, baseline, now, change; exit 1 when a stage falls below its tolerance" };
        var accept = new Option<string?>("--accept") { Description = "Write this run's ratios as a new baseline file" };
        var tolerance = new Option<double>("--tolerance") { Description = "Tolerance written with --accept (relative drop allowed)", DefaultValueFactory = _ => 0.35 };
        var peers = new Option<string?>("--peers") { Description = "Folder with peer_beit_step.py and peer_data.py: run them in the same invocation and add their rows (GPU form)" };
        var python = new Option<string>("--python") { Description = "Python for the peers", DefaultValueFactory = _ => "python3" };
        foreach (var option in new Option[] { shortForm, repeats, device, workers, stages, trainModel, work, json, results, check, accept, tolerance, peers, python }) bench.Options.Add(option);
        bench.SetAction(async (parsed, cancellationToken) =>
        {
            SuiteResult result;
            if (parsed.GetValue(results) is { } earlier)
            {
                result = SuiteJson.Read(earlier);
            }
            else
            {
                var backend = MimFlow.Torch.Backend.TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
                bool cuda = parsed.GetValue(device) == "cuda";
                if (cuda && backend.DefaultDevice.type != TorchSharp.DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
                var wanted = parsed.GetValue(stages)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);
                foreach (string stage in wanted ?? [])
                    if (!BenchSuite.StageNames.Contains(stage)) throw new ArgumentException($"--stages: unknown stage '{stage}' (stages: {string.Join(", ", BenchSuite.StageNames)})");
                if (parsed.GetValue(repeats) < 1) throw new ArgumentException("--repeats must be at least 1");
                var options = new SuiteOptions(parsed.GetValue(shortForm), parsed.GetValue(repeats), parsed.GetRequiredValue(work), cuda ? backend.DefaultDevice : TorchSharp.torch.CPU,
                    parsed.GetValue(workers), wanted, parsed.GetValue(trainModel));
                result = await new BenchSuite(options, line => context.Console.WriteLine(line)).RunAsync(cancellationToken);
                if (parsed.GetValue(peers) is { } peerFolder)
                    result = result with { Peers = await RunPeers(context.Console, parsed.GetRequiredValue(python), peerFolder, result, options, cancellationToken) };
            }
            RenderSuite(context.Console, result);
            if (parsed.GetValue(json) is { } jsonPath) AtomicFile.WriteAllText(jsonPath, SuiteJson.Write(result));
            if (parsed.GetValue(accept) is { } acceptPath)
            {
                AtomicFile.WriteAllText(acceptPath, BenchBaseline.Accept(result, parsed.GetValue(tolerance)).ToJson());
                context.Console.WriteLine($"wrote the baseline {acceptPath}");
            }
            if (parsed.GetValue(check) is { } baselinePath)
            {
                var baseline = BenchBaseline.Read(baselinePath);
                if (baseline.Form != result.Form)
                    context.Console.WriteLine($"note: the baseline is the {baseline.Form} form, this run the {result.Form} form; ratios compare less well");
                // A subset run (--stages) is checked on its own stages; a full run must measure every baseline stage.
                if (parsed.GetValue(stages) is not null)
                    baseline = baseline with { Stages = baseline.Stages.Where(s => result.Stages.Any(r => r.Stage == s.Key)).ToDictionary() };
                var checks = BaselineCheck.Compare(baseline, result);
                RenderCheck(context.Console, baselinePath, checks);
                var regressed = checks.Where(c => c.Regressed).ToList();
                if (regressed.Count > 0)
                {
                    context.Error.WriteLine($"mimflow: regression against {baselinePath}: {string.Join(", ", regressed.Select(c => c.Now is null ? $"{c.Stage} (not measured)" : $"{c.Stage} {c.Change:+0.0%;-0.0%}"))}");
                    return MimFlowCli.Failure;
                }
            }
            return 0;
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

    /// <summary>The GPU form's peers: the BEiT step (eager and torch.compile) and torchvision+PIL decode, in this invocation.</summary>
    private static async Task<IReadOnlyList<PeerFigure>> RunPeers(IAnsiConsole console, string python, string folder, SuiteResult result, SuiteOptions options, CancellationToken cancellationToken)
    {
        var figures = new List<PeerFigure>();
        if (result.Stages.FirstOrDefault(s => s.Stage == "train-step") is { } step && File.Exists(Path.Combine(folder, "peer_beit_step.py")))
            foreach (var line in await RunTrainPeer(python, Path.Combine(folder, "peer_beit_step.py"), options.Device.type == TorchSharp.DeviceType.CUDA ? 128 : 8, cancellationToken))
                figures.Add(new PeerFigure("train-step", line.Mode, line.Rate, "img/s", step.Median / line.Rate, line.Memory, $"peer_beit_step.py {line.Mode}"));
        if (result.Stages.FirstOrDefault(s => s.Stage == "decode") is { } decode && File.Exists(Path.Combine(folder, "peer_data.py")))
        {
            var rates = await RunPeer(console, python, Path.Combine(folder, "peer_data.py"), Path.Combine(options.WorkDirectory, "data"), options.Short ? 64 : 512, [options.Workers], cancellationToken);
            foreach (var (count, rate) in rates)
                figures.Add(new PeerFigure("decode", $"{count} workers", rate, "img/s", decode.Median / rate, null, "peer_data.py (torchvision + PIL)"));
        }
        return figures;
    }

    private static Command CreateTrain(CliContext context)
    {
        var model = new Option<string>("--model") { Description = "Architecture", DefaultValueFactory = _ => "beit-base" };
        var objective = new Option<string>("--objective") { Description = "beit (the peer's step)", DefaultValueFactory = _ => "beit" };
        objective.AcceptOnlyFromAmong("beit");
        var batch = new Option<int>("--batch") { Description = "Images per step", DefaultValueFactory = _ => 128 };
        var dtype = new Option<string>("--dtype") { Description = "Compute type: bf16 (fp32 masters) or fp32", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("bf16", "fp32");
        var steps = new Option<int>("--steps") { Description = "Timed steps (after 8 warmup steps)", DefaultValueFactory = _ => 20 };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var peak = new Option<double?>("--peak-tflops") { Description = "Dense peak of the device for MFU (default: 989 bf16 on H100/H200)" };
        var peer = new Option<string?>("--peer") { Description = "../shared/peers/peer_beit_step.py, run in the same invocation" };
        var python = new Option<string>("--python") { Description = "Python with torch and timm for the peer", DefaultValueFactory = _ => "python3" };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file" };
        var command = new Command("train", "A BEiT training step on synthetic batches (img/s, step time, MFU), its bf16 gradients checked against fp32, next to the PyTorch peer");
        foreach (var option in new Option[] { model, objective, batch, dtype, steps, device, peak, peer, python, json }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var backend = MimFlow.Torch.Backend.TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            bool cuda = parsed.GetValue(device) == "cuda";
            if (cuda && backend.DefaultDevice.type != TorchSharp.DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
            bool bf16 = parsed.GetValue(dtype) == "bf16";
            double? peakTflops = parsed.GetValue(peak);
            if (peakTflops is null && cuda && bf16)
            {
                string gpu = MimFlow.Torch.Diagnostics.GpuInventory.Read().FirstOrDefault()?.Name ?? "";
                if (gpu.Contains("H100", StringComparison.Ordinal) || gpu.Contains("H200", StringComparison.Ordinal)) peakTflops = 989;
            }
            var request = new MimFlow.Training.Benchmarks.TrainStepRequest
            {
                Model = parsed.GetRequiredValue(model), BatchSize = parsed.GetValue(batch), Steps = parsed.GetValue(steps),
                ComputeType = bf16 ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32,
                Device = cuda ? backend.DefaultDevice : TorchSharp.torch.CPU, PeakTflops = peakTflops,
            };
            context.Console.MarkupLineInterpolated($"mimflow: {request.Model} batch {request.BatchSize} {parsed.GetValue(dtype)} on {request.Device} …");
            var result = MimFlow.Training.Benchmarks.TrainStepBenchmark.Run(request, cancellationToken);
            var peerLines = parsed.GetValue(peer) is { } script
                ? await RunTrainPeer(parsed.GetRequiredValue(python), script, request.BatchSize, cancellationToken)
                : [];
            var table = new Table().Title($"bench train: {result.Model}, batch {result.BatchSize}, {result.Device}").AddColumns("run", "img/s", "step ms", "MFU", "note");
            table.AddRow(new Text($"mimflow {result.ComputeType}"), new Text($"{result.ImagesPerSecond:F1}"), new Text($"{result.StepMilliseconds:F1}"),
                new Text(result.Mfu is double m ? $"{m:P1}" : "-"),
                new Text($"loss fp32 {result.LossFp32:F4} vs {result.LossCompute:F4}; gradient rel. error {result.GradientRelativeError:E2}"
                         + (result.DeviceMemoryInUseBytes is long bytes ? $"; device memory in use {bytes / 1073741824.0:F1} GiB" : "")));
            foreach (var line in peerLines)
                table.AddRow(new Text($"peer {line.Mode}"), new Text($"{line.Rate:F1}"), new Text($"{line.Ms:F1}"), new Text("-"),
                    new Text($"peak {line.Memory}; ratio ours/peer {result.ImagesPerSecond / line.Rate:F2}"));
            context.Console.Write(table);
            if (parsed.GetValue(json) is { } jsonPath)
            {
                var document = new
                {
                    benchmark = "train", result.Model, batch = result.BatchSize, dtype = result.ComputeType, device = result.Device,
                    images_per_second = result.ImagesPerSecond, step_ms = result.StepMilliseconds, mfu = result.Mfu, train_flops_per_image = result.TrainFlopsPerImage,
                    device_memory_in_use_bytes = result.DeviceMemoryInUseBytes, loss_fp32 = result.LossFp32, loss_compute = result.LossCompute, gradient_relative_error = result.GradientRelativeError,
                    peer = peerLines.Select(p => new { mode = p.Mode, images_per_second = p.Rate, step_ms = p.Ms, peak_memory = p.Memory }),
                };
                AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));
            }
            return 0;
        });
        return command;
    }

    private static async Task<IReadOnlyList<(string Mode, double Rate, double Ms, string Memory)>> RunTrainPeer(string python, string script, int batchSize, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(script);
        start.ArgumentList.Add(batchSize.ToString(CultureInfo.InvariantCulture));
        using var process = Process.Start(start) ?? throw new IOException($"could not start {start.FileName}");
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        string output = await process.StandardOutput.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0) throw new IOException($"the peer {script} failed (exit {process.ExitCode}): {(await stderr).Trim().Split('\n').LastOrDefault()}");
        return PeerStepLine().Matches(output).Select(match => (match.Groups[1].Value, double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture),
            double.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture), match.Groups[4].Value + " GiB")).ToList();
    }

    [GeneratedRegex(@"(\w+)\s+batch\s+\d+:\s+([\d.]+) img/s\s+step\s+([\d.]+) ms\s+peak mem\s+([\d.]+) GiB")]
    private static partial Regex PeerStepLine();

    private static Command CreateTokenize(CliContext context)
    {
        var data = new DataOptions();
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer model directory (vqkd-* or dvae)" };
        var teacher = new Option<string?>("--teacher") { Description = "Teacher model directory (a ViT)" };
        var images = new Option<int>("--images") { Description = "Images to pre-tokenize (and the forward-only equivalent)", DefaultValueFactory = _ => 256 };
        var batch = new Option<int>("--batch") { Description = "Images per model batch", DefaultValueFactory = _ => 64 };
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file" };
        var command = new Command("tokenize", "Pre-tokenization img/s and the share of time the model waited for input, next to the models' forward-only img/s on the same device");
        data.AddTo(command);
        foreach (var option in new Option[] { tokenizer, teacher, images, batch, workers, device, json }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var backend = MimFlow.Torch.Backend.TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            bool cuda = parsed.GetValue(device) == "cuda";
            if (cuda && backend.DefaultDevice.type != TorchSharp.DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
            var request = new MimFlow.Precompute.Tokenize.TokenizeRequest
            {
                DataRoot = parsed.GetRequiredValue(data.Data), Layout = data.LayoutOf(parsed), Split = data.SplitOf(parsed), GroundTruth = data.GroundTruthOf(parsed),
                TokenizerDirectory = parsed.GetValue(tokenizer), TeacherDirectory = parsed.GetValue(teacher), OutputDirectory = "unused",
                BatchSize = parsed.GetValue(batch), DecodeWorkers = parsed.GetValue(workers), Device = cuda ? backend.DefaultDevice : TorchSharp.torch.CPU,
            };
            context.Console.MarkupLineInterpolated($"mimflow: forward-only, then pre-tokenization of {parsed.GetValue(images)} images …");
            var result = await MimFlow.Precompute.Tokenize.TokenizeBenchmark.RunAsync(request, parsed.GetValue(images), cancellationToken);
            var table = new Table().Title($"bench tokenize ({result.Arithmetic})").AddColumns("forward-only img/s", "pre-tokenization img/s", "ratio", "model waited for input");
            table.AddRow($"{result.ForwardOnlyImagesPerSecond:F1}", $"{result.PipelineImagesPerSecond:F1}", $"{result.Ratio:F2}", $"{result.InputWaitShare:P1}");
            context.Console.Write(table);
            if (parsed.GetValue(json) is { } jsonPath)
            {
                var host = HostFacts.Read();
                var document = new
                {
                    benchmark = "tokenize", tokenizer = parsed.GetValue(tokenizer), teacher = parsed.GetValue(teacher), images = result.Images, batch = request.BatchSize,
                    arithmetic = result.Arithmetic, forward_only_images_per_second = result.ForwardOnlyImagesPerSecond,
                    images_per_second = result.PipelineImagesPerSecond, ratio = result.Ratio, input_wait_share = result.InputWaitShare,
                    machine = new { host.OperatingSystem, host.LogicalCores, dotnet = host.DotnetVersion },
                };
                AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));
            }
            return 0;
        });
        return command;
    }

    private static Command CreateData(CliContext context)
    {
        var data = new DataOptions();
        var workers = new Option<string>("--workers") { Description = "Worker counts to measure, e.g. 1,2", DefaultValueFactory = _ => $"1,{Environment.ProcessorCount}" };
        var images = new Option<int>("--images") { Description = "Images per measurement", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch") { Description = "Batch size", DefaultValueFactory = _ => 64 };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file" };
        var peer = new Option<string?>("--peer") { Description = "torchvision+PIL peer script (../shared/peers/peer_data.py), run on the same folder first" };
        var recipe = new Option<string>("--recipe") { Description = "pretrain (the peer's recipe), pretrain-two-view, multi-crop, finetune or eval", DefaultValueFactory = _ => "pretrain" };
        recipe.AcceptOnlyFromAmong("pretrain", "pretrain-two-view", "multi-crop", "finetune", "eval");
        var python = new Option<string>("--python") { Description = "Python with torch, torchvision and PIL for the peer", DefaultValueFactory = _ => "/usr/bin/python3" };
        var command = new Command("data", "Decode + augment + collate of the pretraining recipe (images/s, per core), optionally against torchvision+PIL on the same files");
        data.AddTo(command);
        foreach (var option in new Option[] { workers, images, batch, recipe, json, peer, python }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            int[] counts = parsed.GetRequiredValue(workers).Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(w => int.TryParse(w, out int n) && n > 0 ? n : throw new ArgumentException($"--workers takes positive counts like 1,2 (got '{w}')."))
                .ToArray();
            int n = parsed.GetValue(images);
            var peerRates = new Dictionary<int, double>();
            if (parsed.GetValue(peer) is { } script)
                peerRates = await RunPeer(context.Console, parsed.GetRequiredValue(python), script, parsed.GetRequiredValue(data.Data), n, counts, cancellationToken);

            var index = data.Open(parsed);
            string recipeName = parsed.GetRequiredValue(recipe);
            IAugmentRecipe chosen = recipeName switch
            {
                "pretrain-two-view" => new PretrainRecipe(),
                "multi-crop" => new MultiCropRecipe(),
                "finetune" => new FinetuneRecipe(),
                "eval" => new EvalRecipe(),
                _ => new PretrainRecipe(SecondViewSize: null),
            };
            if (index.Count < n) n = index.Count;
            var results = new List<LoaderBenchmarkResult>();
            foreach (int count in counts)
            {
                context.Console.MarkupLineInterpolated($"mimflow: {count} worker(s), {n} images …");
                results.Add(await LoaderBenchmark.RunAsync(index, chosen, count, n, parsed.GetValue(batch), cancellationToken));
            }

            var table = new Table().Title($"bench data: {recipeName} recipe, float32 batches")
                .AddColumns("workers", "mimflow img/s", "per core", "peer img/s", "peer per worker", "ratio per core");
            var rows = results.Select(r =>
            {
                double? peerRate = peerRates.TryGetValue(r.Workers, out double p) ? p : null;
                double? ratio = peerRate is > 0 ? r.ImagesPerSecondPerCore / (peerRate.Value / r.Workers) : null;
                table.AddRow(r.Workers.ToString(), $"{r.ImagesPerSecond:F1}", $"{r.ImagesPerSecondPerCore:F1}",
                    peerRate?.ToString("F1", CultureInfo.InvariantCulture) ?? "-", peerRate is { } q ? (q / r.Workers).ToString("F1", CultureInfo.InvariantCulture) : "-",
                    ratio?.ToString("F2", CultureInfo.InvariantCulture) ?? "-");
                return new
                {
                    workers = r.Workers, images = r.Images, seconds = r.Seconds,
                    images_per_second = r.ImagesPerSecond, images_per_second_per_core = r.ImagesPerSecondPerCore,
                    peer_images_per_second = peerRate, ratio_per_core = ratio,
                };
            }).ToList();
            context.Console.Write(table);

            if (parsed.GetValue(json) is { } jsonPath)
            {
                var best = results.MaxBy(r => r.Workers)!;
                var host = HostFacts.Read();
                var document = new
                {
                    benchmark = "data",
                    recipe = recipeName,
                    data = index.Root, layout = index.Layout, batch = parsed.GetValue(batch),
                    images_per_second = best.ImagesPerSecond, images_per_second_per_core = best.ImagesPerSecondPerCore,
                    runs = rows,
                    machine = new { host.OperatingSystem, host.LogicalCores, dotnet = host.DotnetVersion, libvips = MimFlow.Data.Decoding.LibvipsSettings.Version },
                };
                AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));
                context.Console.MarkupLineInterpolated($"results in {jsonPath}");
            }
            return 0;
        });
        return command;
    }

    private static async Task<Dictionary<int, double>> RunPeer(IAnsiConsole console, string python, string script, string folder, int images, int[] workers, CancellationToken cancellationToken)
    {
        if (!File.Exists(script)) throw new FileNotFoundException($"{script}: peer script not found");
        var start = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in new[] { script, folder, images.ToString(CultureInfo.InvariantCulture), string.Join(',', workers) }) start.ArgumentList.Add(arg);
        console.MarkupLineInterpolated($"peer: {python} {script} {folder} {images} {string.Join(',', workers)} …");
        using var process = Process.Start(start) ?? throw new IOException($"could not start {python}");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        string output = await stdout;
        if (process.ExitCode != 0)
            throw new IOException($"the peer {script} failed (exit {process.ExitCode}): {(await stderr).Trim().Split('\n').LastOrDefault()}");
        var rates = new Dictionary<int, double>();
        foreach (Match match in PeerLine().Matches(output))
            rates[int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture)] = double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries)) console.WriteLine($"  peer: {line}");
        return rates;
    }

    [GeneratedRegex(@"workers\s+(\d+):\s+([\d.]+) img/s")]
    private static partial Regex PeerLine();
}
