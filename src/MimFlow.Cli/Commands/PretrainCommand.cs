using System.CommandLine;
using MimFlow.Torch.Backend;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;
using Spectre.Console;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow pretrain</c> (BEiT, BEiT v2, MaskDistill from shards) and <c>mimflow plot</c> (its curves).</summary>
internal static class PretrainCommand
{
    public static Command Create(CliContext context)
    {
        var shards = new Option<string?>("--shards") { Description = "Pre-tokenized shard folder (mimflow tokenize): beit, beitv2, maskdistill" };
        var data = new DataOptions(required: false, defaultLayout: null, defaultSplit: null, groundTruth: false, layoutOptional: true,
            dataDescription: "Dataset: ibot reads its multi-crop views from it; with --shards, the dataset the shards were tokenized from, whose originals each " +
                             "row's view is replayed on (shards stored without images need it). A folder; wds and hf-parquet also a shard file or a brace pattern. " +
                             "--layout defaults to the one the shards record (imagenet for ibot)");
        var localCrops = new Option<int>("--local-crops") { Description = "iBOT local crops per image", DefaultValueFactory = _ => 10 };
        var objective = new Option<string>("--objective") { Description = "beit, beitv2, maskdistill (from shards) or ibot (from --data)", Required = true };
        objective.AcceptOnlyFromAmong([.. PretrainingObjectives.Names]);
        var model = new Option<string>("--model") { Description = "Architecture (beit-base, …) or a model directory to start from", Required = true };
        var output = new Option<string>("--out") { Description = "Run folder: checkpoints/, metrics.jsonl, latest.json", Required = true };
        var steps = new Option<long?>("--steps") { Description = "Optimisation steps" };
        var epochs = new Option<int?>("--epochs") { Description = "Epochs over the shards (instead of --steps)" };
        var batch = new Option<int>("--batch") { Description = "Images per step", DefaultValueFactory = _ => 64 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of initialisation, shuffling, views, masks and drop path", DefaultValueFactory = _ => 0 };
        var every = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints (and one at the end)", DefaultValueFactory = _ => 500 };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its latest checkpoint, exactly" };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var lr = new Option<double>("--lr") { Description = "Peak learning rate after warmup (BEiT: 1.5e-3 at batch 2048)", DefaultValueFactory = _ => 1.5e-3 };
        var minLr = new Option<double>("--min-lr") { Description = "Learning rate at the end of the cosine", DefaultValueFactory = _ => 1e-5 };
        var warmup = new Option<long?>("--warmup-steps") { Description = "Linear warmup steps (default: 10 epochs, at most a tenth of the run)" };
        var shuffle = new Option<int>("--shuffle-buffer") { Description = "Images held in memory for shuffling the shard stream", DefaultValueFactory = _ => 1024 };
        var precision = new Option<string?>("--precision") { Description = "bf16 (compute copy over fp32 masters) or fp32; default bf16 on cuda, fp32 on cpu" };
        precision.AcceptOnlyFromAmong("bf16", "fp32");
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("pretrain", "Masked image modeling: BEiT (codes), BEiT v2 (codes + patch aggregation), MaskDistill (teacher features) from shards; iBOT (online EMA teacher, multi-crop) from a dataset");
        command.Options.Add(shards);
        data.AddTo(command);
        foreach (var option in new Option[] { localCrops, objective, model, output, steps, epochs, batch, seed, every, resume, device, lr, minLr, warmup, workers, precision, shuffle })
            command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            bool cuda = parsed.GetValue(device) == "cuda";
            if (cuda && backend.DefaultDevice.type != DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
            var request = new PretrainRequest
            {
                Shards = parsed.GetValue(shards), Data = parsed.GetValue(data.Data), LocalCrops = parsed.GetValue(localCrops),
                Layout = data.LayoutOrDefault(parsed),
                Objective = parsed.GetRequiredValue(objective), Model = parsed.GetRequiredValue(model),
                OutputDirectory = parsed.GetRequiredValue(output), Steps = parsed.GetValue(steps), Epochs = parsed.GetValue(epochs),
                BatchSize = parsed.GetValue(batch), Seed = parsed.GetValue(seed), CheckpointEvery = parsed.GetValue(every), Resume = parsed.GetValue(resume),
                Device = cuda ? backend.DefaultDevice : torch.CPU, LearningRate = parsed.GetValue(lr), MinLearningRate = parsed.GetValue(minLr),
                WarmupSteps = parsed.GetValue(warmup), DecodeWorkers = parsed.GetValue(workers), ShuffleBuffer = parsed.GetValue(shuffle),
                ComputeType = parsed.GetValue(precision) switch { "bf16" => torch.ScalarType.BFloat16, "fp32" => torch.ScalarType.Float32, _ => null },
            };
            var r = await CliProgress.RunAsync(context.Console, "pretrain", 1, task => Pretrainer.RunAsync(request, new Progress<PretrainProgress>(p =>
            {
                task.MaxValue = p.TotalSteps;
                task.Value = p.Step + 1;
                task.Description = $"step {p.Step + 1}/{p.TotalSteps} loss {p.Loss:F3} {p.ImagesPerSecond:F1} img/s";
            }), cancellationToken));
            context.Report($"steps {r.FirstStep}–{r.LastStep}: loss {r.FirstLoss:F3} → {r.LastLoss:F3}, {r.ImagesPerSecond:F0} img/s, input-bound {r.InputBoundShare:P0}");
            context.Console.MarkupLineInterpolated($"steps {r.FirstStep}–{r.LastStep}: loss {r.FirstLoss:F4} → {r.LastLoss:F4}, {r.ImagesPerSecond:F1} img/s, input-bound {r.InputBoundShare:P1}, {r.SkippedSteps} skipped; checkpoint {r.Checkpoint}");
            return 0;
        });
        return command;
    }

    public static Command CreatePlot(CliContext context)
    {
        var run = new Argument<string>("RUN_DIR") { Description = "A run folder with metrics.jsonl" };
        var output = new Option<string?>("--out") { Description = "Folder for the PNGs (default: the run folder)" };
        var command = new Command("plot", "Draw a run's loss, learning-rate and throughput curves to PNG");
        command.Arguments.Add(run);
        command.Options.Add(output);
        command.SetAction((parsed, _) =>
        {
            var pictures = RunPlots.Draw(parsed.GetRequiredValue(run), parsed.GetValue(output));
            foreach (string picture in pictures) context.Console.MarkupLineInterpolated($"wrote {picture}");
            context.Report($"{pictures.Count} PNGs: {string.Join(", ", pictures.Select(Path.GetFileName))}");
            return Task.FromResult(0);
        });
        return command;
    }
}

/// <summary><c>mimflow train-tokenizer --objective vqkd</c>: BEiT v2's tokenizer against a frozen teacher.</summary>
internal static class TrainTokenizerCommand
{
    public static Command Create(CliContext context)
    {
        var objective = new Option<string>("--objective") { Description = "vqkd", DefaultValueFactory = _ => "vqkd" };
        objective.AcceptOnlyFromAmong("vqkd");
        var teacher = new Option<string>("--teacher") { Description = "Frozen teacher model directory (CLIP, DINO ViT)", Required = true };
        var data = new DataOptions(defaultLayout: "imagenet", defaultSplit: null, groundTruth: false);
        var model = new Option<string>("--model") { Description = "vqkd-tiny, vqkd-base or a VQ-KD model directory", DefaultValueFactory = _ => "vqkd-base" };
        var output = new Option<string>("--out") { Description = "Run folder: metrics.jsonl and tokenizer/ (a model directory for mimflow tokenize)", Required = true };
        var steps = new Option<long?>("--steps") { Description = "Optimisation steps" };
        var epochs = new Option<int?>("--epochs") { Description = "Epochs (instead of --steps)" };
        var batch = new Option<int>("--batch") { Description = "Images per step", DefaultValueFactory = _ => 64 };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate (BEiT v2: 5e-5)", DefaultValueFactory = _ => 5e-5 };
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("train-tokenizer", "Train a VQ-KD tokenizer (BEiT v2) to reconstruct a frozen teacher's features: cosine + commitment, EMA codebook, dead-code restarts");
        foreach (var option in new Option[] { objective, teacher }) command.Options.Add(option);
        data.AddTo(command);
        foreach (var option in new Option[] { model, output, steps, epochs, batch, lr, seed, device, workers }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            bool cuda = parsed.GetValue(device) == "cuda";
            if (cuda && backend.DefaultDevice.type != DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
            var request = new MimFlow.Training.Tokenizer.VqKdTrainRequest
            {
                Data = parsed.GetRequiredValue(data.Data), Teacher = parsed.GetRequiredValue(teacher), Model = parsed.GetRequiredValue(model),
                OutputDirectory = parsed.GetRequiredValue(output), Steps = parsed.GetValue(steps), Epochs = parsed.GetValue(epochs), BatchSize = parsed.GetValue(batch),
                LearningRate = parsed.GetValue(lr), Seed = parsed.GetValue(seed), Device = cuda ? backend.DefaultDevice : torch.CPU, DecodeWorkers = parsed.GetValue(workers),
                Layout = data.LayoutOf(parsed),
            };
            var result = await MimFlow.Training.Tokenizer.VqKdTrainer.RunAsync(request, cancellationToken: cancellationToken);
            context.Report($"{result.Steps} steps: loss {result.FirstLoss:F3} → {result.LastLoss:F3}, codebook in use {result.CodebookUsage:P1}");
            context.Console.MarkupLineInterpolated($"{result.Steps} steps: loss {result.FirstLoss:F4} → {result.LastLoss:F4}, codebook in use {result.CodebookUsage:P1} ({result.CodesRestarted} dead codes restarted), {result.ImagesPerSecond:F1} img/s; tokenizer in {result.Tokenizer}");
            return 0;
        });
        return command;
    }
}
