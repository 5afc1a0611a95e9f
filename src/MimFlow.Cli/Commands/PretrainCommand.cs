using MimFlow.Core.Status;
using MimFlow.Cli.Reporting;
using System.CommandLine;
using MimFlow.Data.Sources;
using MimFlow.Training.Distributed;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;
using MimFlow.Training.Tokenizer;
using Spectre.Console;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary>The options of <c>mimflow pretrain</c>; only what the user typed is applied onto <see cref="PretrainRequest"/>'s defaults.</summary>
internal sealed class PretrainOptions
{
    private static readonly PretrainRequest Defaults = new() { Objective = "beit", Model = "", OutputDirectory = "" };

    public Option<string?> Shards { get; } = new("--shards") { Description = "Pre-tokenized shard folder (mimflow tokenize): beit, beitv2, maskdistill" };
    public DataOptions Data { get; } = new(required: false, defaultSplit: null, groundTruth: false, layoutOptional: true,
        dataDescription: "Dataset: ibot reads its multi-crop views from it; with --shards, the dataset the shards were tokenized from, whose originals each " +
                         "row's view is replayed on (shards stored without images need it). A folder; wds and hf-parquet also a shard file or a brace pattern. " +
                         "--layout defaults to the one the shards record (imagenet for ibot)");
    public Option<int?> LocalCrops { get; } = new("--local-crops") { Description = $"iBOT local crops per image (default {Defaults.LocalCrops})" };
    public Option<string> Objective { get; } = FinetuneOptions.Choice("--objective", "beit, beitv2, maskdistill (from shards) or ibot (from --data)", [.. PretrainingObjectives.Names]);
    public Option<string> Model { get; } = new("--model") { Description = "Architecture (beit-base, …) or a model directory to start from", Required = true };
    public Option<string> Output { get; } = new("--out") { Description = "Run folder: checkpoints/, metrics.jsonl, latest.json", Required = true };
    public Option<long?> Steps { get; } = new("--steps") { Description = "Optimisation steps" };
    public Option<int?> Epochs { get; } = new("--epochs") { Description = "Epochs over the shards (instead of --steps)" };
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per step (default {Defaults.BatchSize})" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed of initialisation, shuffling, views, masks and drop path (default 0)" };
    public Option<int?> CheckpointEvery { get; } = new("--checkpoint-every") { Description = $"Steps between checkpoints, and one at the end (default {Defaults.CheckpointEvery})" };
    public Option<bool> Resume { get; } = new("--resume") { Description = "Continue the run in --out from its latest checkpoint, exactly" };
    public DeviceOption Device { get; } = new();
    public Option<double?> LearningRate { get; } = new("--lr") { Description = $"Peak learning rate after warmup, as given (BEiT: 1.5e-3 at batch 2048; default {Defaults.LearningRate})" };
    public Option<double?> MinLearningRate { get; } = new("--min-lr") { Description = $"Learning rate at the end of the cosine (default {Defaults.MinLearningRate})" };
    public Option<long?> WarmupSteps { get; } = new("--warmup-steps") { Description = "Linear warmup steps (default: 10 epochs, at most a tenth of the run)" };
    public Option<int?> ShuffleBuffer { get; } = new("--shuffle-buffer") { Description = $"Images held in memory for shuffling the shard stream (default {Defaults.ShuffleBuffer})" };
    public Option<string?> Precision { get; } = FinetuneOptions.NullableChoice("--precision", "bf16 (compute copy over fp32 masters) or fp32; default bf16 on cuda, fp32 on cpu", "bf16", "fp32");
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };

    public void AddTo(Command command)
    {
        command.Options.Add(Shards);
        Data.AddTo(command);
        foreach (var option in new Option[] { LocalCrops, Objective, Model, Output, Steps, Epochs, Batch, Seed, CheckpointEvery, Resume, Device.Option, LearningRate, MinLearningRate, WarmupSteps, Workers, Precision, ShuffleBuffer })
            command.Options.Add(option);
    }

    public PretrainRequest Request(ParseResult parsed)
    {
        var request = new PretrainRequest { Objective = parsed.GetRequiredValue(Objective), Model = parsed.GetRequiredValue(Model), OutputDirectory = parsed.GetRequiredValue(Output) };
        return request with
        {
            Shards = parsed.GetValue(Shards) ?? request.Shards, Data = parsed.GetValue(Data.Data) ?? request.Data, Layout = Data.LayoutOrDefault(parsed) ?? request.Layout,
            LocalCrops = parsed.GetValue(LocalCrops) ?? request.LocalCrops, Steps = parsed.GetValue(Steps) ?? request.Steps, Epochs = parsed.GetValue(Epochs) ?? request.Epochs,
            BatchSize = parsed.GetValue(Batch) ?? request.BatchSize, Seed = parsed.GetValue(Seed) ?? request.Seed,
            CheckpointEvery = parsed.GetValue(CheckpointEvery) ?? request.CheckpointEvery, Resume = parsed.GetValue(Resume) || request.Resume,
            LearningRate = parsed.GetValue(LearningRate) ?? request.LearningRate, MinLearningRate = parsed.GetValue(MinLearningRate) ?? request.MinLearningRate,
            WarmupSteps = parsed.GetValue(WarmupSteps) ?? request.WarmupSteps, DecodeWorkers = parsed.GetValue(Workers) ?? request.DecodeWorkers,
            ShuffleBuffer = parsed.GetValue(ShuffleBuffer) ?? request.ShuffleBuffer,
            ComputeType = parsed.GetValue(Precision) switch { "bf16" => torch.ScalarType.BFloat16, "fp32" => torch.ScalarType.Float32, _ => request.ComputeType },
        };
    }
}

/// <summary><c>mimflow pretrain</c> (BEiT, BEiT v2, MaskDistill from shards; iBOT from a dataset) and <c>mimflow plot</c> (its curves).</summary>
internal static class PretrainCommand
{
    public static Command Create(CliContext context)
    {
        var options = new PretrainOptions();
        var command = new Command("pretrain", "Masked image modeling: BEiT (codes), BEiT v2 (codes + patch aggregation), MaskDistill (teacher features) from shards; iBOT (online EMA teacher, multi-crop) from a dataset");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            request.Validate();
            return await DataParallelLaunch.RunTrainingAsync(parsed, options.Device.Resolve(parsed),
                (collective, device) => Pretrainer.RunAsync(request with { Device = device }, null, cancellationToken, collective),
                async (collective, device) =>
                {
                    var r = await CliProgress.RunAsync(context, "pretrain", "steps", report => Pretrainer.RunAsync(request with { Device = device },
                        new ImmediateProgress<PretrainProgress>(p => report(ProgressReport.FromStep(p.Step, p.TotalSteps, p.Figures))), cancellationToken, collective));
                    string ranks = collective.WorldSize > 1 ? $", {collective.WorldSize} ranks ({collective.Backend})" : "";
                    context.Report($"steps {r.FirstStep}–{r.LastStep}: loss {r.FirstLoss:F3} → {r.LastLoss:F3}, {r.ImagesPerSecond:F0} img/s, input-bound {r.InputBoundShare:P0}{ranks}");
                    context.Console.MarkupLineInterpolated($"steps {r.FirstStep}–{r.LastStep}: loss {r.FirstLoss:F4} → {r.LastLoss:F4}, {r.ImagesPerSecond:F1} img/s, input-bound {r.InputBoundShare:P1}, {r.SkippedSteps} skipped{ranks}; checkpoint {r.Checkpoint}");
                });
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

/// <summary>The options of <c>mimflow train-tokenizer</c>; only what the user typed is applied onto <see cref="VqKdTrainRequest"/>'s defaults.</summary>
internal sealed class TrainTokenizerOptions
{
    private static readonly VqKdTrainRequest Defaults = new() { Data = "", Teacher = "", OutputDirectory = "" };

    public Option<string?> Objective { get; } = FinetuneOptions.NullableChoice("--objective", "vqkd (BEiT v2's tokenizer; the only one)", "vqkd");
    public Option<string> Teacher { get; } = new("--teacher") { Description = "Frozen teacher model directory (CLIP, DINO ViT)", Required = true };
    public DataOptions Data { get; } = new(defaultSplit: null, groundTruth: false, layoutOptional: true,
        dataDescription: $"Dataset: a root folder; wds and hf-parquet also a shard file or a brace pattern (--layout default {DatasetLayouts.Name(Defaults.Layout)})");
    public Option<string?> Model { get; } = new("--model") { Description = $"vqkd-tiny, vqkd-base or a VQ-KD model directory to start from (default {Defaults.Model})" };
    public Option<string> Output { get; } = new("--out") { Description = "Run folder: metrics.jsonl and tokenizer/ (a model directory for mimflow tokenize)", Required = true };
    public Option<long?> Steps { get; } = new("--steps") { Description = "Optimisation steps" };
    public Option<int?> Epochs { get; } = new("--epochs") { Description = "Epochs (instead of --steps)" };
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per step (default {Defaults.BatchSize})" };
    public Option<double?> LearningRate { get; } = new("--lr") { Description = $"Peak learning rate (BEiT v2: 5e-5; default {Defaults.LearningRate})" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed (default 0)" };
    public DeviceOption Device { get; } = new();
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Objective, Teacher }) command.Options.Add(option);
        Data.AddTo(command);
        foreach (var option in new Option[] { Model, Output, Steps, Epochs, Batch, LearningRate, Seed, Device.Option, Workers }) command.Options.Add(option);
    }

    public VqKdTrainRequest Request(ParseResult parsed)
    {
        var request = new VqKdTrainRequest { Data = parsed.GetRequiredValue(Data.Data), Teacher = parsed.GetRequiredValue(Teacher), OutputDirectory = parsed.GetRequiredValue(Output) };
        return request with
        {
            Layout = Data.LayoutOrDefault(parsed) ?? request.Layout, Model = parsed.GetValue(Model) ?? request.Model, Steps = parsed.GetValue(Steps) ?? request.Steps,
            Epochs = parsed.GetValue(Epochs) ?? request.Epochs, BatchSize = parsed.GetValue(Batch) ?? request.BatchSize,
            LearningRate = parsed.GetValue(LearningRate) ?? request.LearningRate, Seed = parsed.GetValue(Seed) ?? request.Seed,
            DecodeWorkers = parsed.GetValue(Workers) ?? request.DecodeWorkers,
        };
    }
}

/// <summary><c>mimflow train-tokenizer --objective vqkd</c>: BEiT v2's tokenizer against a frozen teacher.</summary>
internal static class TrainTokenizerCommand
{
    public static Command Create(CliContext context)
    {
        var options = new TrainTokenizerOptions();
        var command = new Command("train-tokenizer", "Train a VQ-KD tokenizer (BEiT v2) to reconstruct a frozen teacher's features: cosine + commitment, EMA codebook, dead-code restarts");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            request.Validate();
            return await DataParallelLaunch.RunTrainingAsync(parsed, options.Device.Resolve(parsed),
                (collective, device) => VqKdTrainer.RunAsync(request with { Device = device }, cancellationToken: cancellationToken, collective: collective),
                async (collective, device) =>
                {
                    var result = await CliProgress.RunAsync(context, "train-tokenizer", "steps", report => VqKdTrainer.RunAsync(request with { Device = device },
                        new ImmediateProgress<TrainStepProgress>(p => report(ProgressReport.FromStep(p.Step, p.TotalSteps, p.Figures))), cancellationToken, collective));
                    context.Report($"{result.Steps} steps: loss {result.FirstLoss:F3} → {result.LastLoss:F3}, codebook in use {result.CodebookUsage:P1}");
                    context.Console.MarkupLineInterpolated($"{result.Steps} steps: loss {result.FirstLoss:F4} → {result.LastLoss:F4}, codebook in use {result.CodebookUsage:P1} ({result.CodesRestarted} dead codes restarted), {result.ImagesPerSecond:F1} img/s; tokenizer in {result.Tokenizer}");
                });
        });
        return command;
    }
}
