using System.Diagnostics;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Masking;
using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Shards;
using MimFlow.Training.Distributed;
using MimFlow.Training.Feeding;
using MimFlow.Training.Objectives;
using MimFlow.Training.Kernel;
using MimFlow.Training.Optimization;
using MimFlow.Training.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Pretraining;

/// <summary>What <c>mimflow pretrain</c> runs. Learning rates are per image batch as given (no implicit scaling).</summary>
public sealed record PretrainRequest
{
    /// <summary>Pre-tokenized shards (beit, beitv2, maskdistill).</summary>
    public string? Shards { get; init; }

    /// <summary>
    /// A dataset: ibot reads its multi-crop views from it; with <see cref="Shards"/>, the dataset the shards were
    /// tokenized from, whose original images each row's view is replayed on (needed for shards stored without images).
    /// </summary>
    public string? Data { get; init; }

    /// <summary>The layout of <see cref="Data"/>; null: the one the shards record, else ImageNet.</summary>
    public DatasetLayout? Layout { get; init; }

    /// <summary>iBOT's local crops per image (10 in the paper).</summary>
    public int LocalCrops { get; init; } = 10;

    public required string Objective { get; init; }

    /// <summary>An architecture name (<c>beit-base</c>, …) or a model directory to start from.</summary>
    public required string Model { get; init; }

    public required string OutputDirectory { get; init; }
    public long? Steps { get; init; }
    public int? Epochs { get; init; }
    public int BatchSize { get; init; } = 64;
    public ulong Seed { get; init; }
    public int CheckpointEvery { get; init; } = 500;
    public bool Resume { get; init; }
    public Device? Device { get; init; }
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>Images held for shuffling within the shard stream (memory grows with this × row size).</summary>
    public int ShuffleBuffer { get; init; } = 1024;

    /// <summary>Peak learning rate (BEiT: 1.5e-3 at batch 2048); the cosine schedule ends at <see cref="MinLearningRate"/>.</summary>
    public double LearningRate { get; init; } = 1.5e-3;
    public double MinLearningRate { get; init; } = 1e-5;
    public long? WarmupSteps { get; init; }
    public double WeightDecay { get; init; } = 0.05;

    /// <summary>AdamW β2: 0.999 in BEiT, 0.98 in BEiT v2 and MaskDistill (null: the objective's).</summary>
    public double? Beta2 { get; init; }
    public double ClipGradient { get; init; } = 3.0;

    /// <summary>
    /// Compute type: bfloat16 (a bf16 copy over fp32 master weights, see <c>LowPrecisionShadow</c>) or float32;
    /// null: bf16 on CUDA, fp32 on CPU. iBOT stays in fp32 (its EMA teacher lives with the masters).
    /// </summary>
    public ScalarType? ComputeType { get; init; }

    /// <summary>BEiT's masking: about 40 % of the patches in blocks of at least 16.</summary>
    public double MaskRatio { get; init; } = 0.4;

    /// <summary>Consecutive non-finite losses tolerated (each step skipped and counted) before the run stops.</summary>
    public int MaxConsecutiveNonFinite { get; init; } = 5;

    public void Validate()
    {
        var source = PretrainingObjectives.Find(Objective).Source;
        if (source == ObjectiveSource.Dataset && Data is null) throw new ArgumentException($"{Objective} reads its multi-crop views from a dataset: give --data (and --layout)");
        if (source == ObjectiveSource.Shards && Shards is null) throw new ArgumentException($"{Objective} trains from pre-tokenized shards: give --shards");
        if ((Steps is null) == (Epochs is null)) throw new ArgumentException("give exactly one of --steps and --epochs");
        if (BatchSize < 1 || CheckpointEvery < 1) throw new ArgumentException("the batch size and the checkpoint interval must be at least 1");
        if (MaskRatio is <= 0 or >= 1) throw new ArgumentException($"the mask ratio must be in (0, 1) (got {MaskRatio})");
    }
}

/// <param name="Figures">The numbers of the step's metrics line (loss terms, lr, grad_norm, images_per_second, input_wait, …).</param>
public sealed record PretrainProgress(long Step, long TotalSteps, double Loss, double ImagesPerSecond, double InputBound, IReadOnlyDictionary<string, double> Figures);

public sealed record PretrainResult(long FirstStep, long LastStep, double FirstLoss, double LastLoss, long SkippedSteps, double ImagesPerSecond,
    double InputBoundShare, string Checkpoint);

/// <summary>
/// The pretraining loop: shard feeder → device prefetch → objective loss → backward → gradient clipping → flat AdamW
/// with a warmup + cosine learning rate → metrics.jsonl, with checkpoints every N steps and at the end. Stochastic
/// depth draws from a generator seeded by (seed, step), the feeder is a function of (seed, epoch), and the optimiser
/// state is saved whole, so <c>--resume</c> continues exactly: on CPU each step's loss equals the uninterrupted run's.
/// A non-finite loss skips its step (counted); too many in a row stop the run with a checkpoint and a clear message.
/// </summary>
public static class Pretrainer
{
    /// <param name="collective">The ranks of a data-parallel run (null: one process). Every rank reads and computes its
    /// rows of each global batch of <see cref="PretrainRequest.BatchSize"/>; rank 0 alone writes the run folder.</param>
    public static async Task<PretrainResult> RunAsync(PretrainRequest request, IProgress<PretrainProgress>? progress = null, CancellationToken cancellationToken = default,
        ICollective? collective = null)
    {
        request.Validate();
        using var rank = RankRun.Start(collective, request.OutputDirectory, "pretrain", request.BatchSize);
        collective = rank.Collective;
        var device = request.Device ?? CPU;
        var store = new CheckpointStore(request.OutputDirectory);
        string? resumeFrom = request.Resume ? store.Latest() : null;
        if (!request.Resume && store.Latest() is not null)
            throw new InvalidOperationException($"{request.OutputDirectory}: holds a run already; pass --resume to continue it or choose a new folder");
        rank.VerifySameOptions(request with { Device = null, DecodeWorkers = 0 }, device, Path.GetFileName(resumeFrom) ?? "-");

        var source = BackboneSource.Resolve(request.Model, "pretraining backbone");
        var spec = source.Spec with { Config = source.Config with { UseMaskToken = true, NumClasses = 0 } };
        var backbone = new VisionTransformer(spec.Config!);
        var config = backbone.Config;
        var (objective, input, createObjective) = Build(request, backbone, collective);
        if (input.BatchesPerEpoch == 0) throw new ArgumentException($"{request.Shards ?? request.Data}: too few images for one full batch of {request.BatchSize}");
        long totalSteps = request.Steps ?? request.Epochs!.Value * input.BatchesPerEpoch;

        using var module = (nn.Module)objective;
        objective.UseCollective(collective);
        objective.Initialize((long)request.Seed);
        BackboneSource.CopyWeights(source, backbone, new BackboneTransfer("pretraining backbone", NotCopied: [], MayBeMissing: ["mask_token"]));
        module.to(device);
        using var optimizer = new FlatAdamW(ParameterGroups.Build(module), new AdamWOptions
        {
            Beta2 = request.Beta2 ?? objective.DefaultBeta2, WeightDecay = request.WeightDecay,
        });
        var computeType = !objective.SupportsLowPrecision ? ScalarType.Float32
            : request.ComputeType ?? (device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32);
        IMimObjective? compute = null;
        LowPrecisionShadow? shadow = null;
        if (computeType != ScalarType.Float32)
        {
            compute = createObjective(new VisionTransformer(backbone.Config));
            compute.UseCollective(collective);
            ((nn.Module)compute).to(device);
            ((nn.Module)compute).train();
            shadow = new LowPrecisionShadow((nn.Module)compute, optimizer, computeType);
        }
        using var computeModule = (nn.Module?)compute;
        using var shadowOwner = shadow;
        long warmup = request.WarmupSteps ?? Math.Min(totalSteps / 10, 10 * input.BatchesPerEpoch);
        var schedule = CosineSchedule.LearningRate(request.LearningRate, request.MinLearningRate, totalSteps, warmup);
        var kernel = new TrainerKernel(optimizer, request.Seed, device, request.ClipGradient, collective);

        var state = new TrainerState(0, 0, 0, 0, request.Objective, spec.Architecture, request.Seed);
        if (resumeFrom is not null)
        {
            state = CheckpointStore.ReadState(resumeFrom);
            if (state.Objective != request.Objective || state.Seed != request.Seed)
                throw new InvalidOperationException($"{resumeFrom}: a {state.Objective} run with seed {state.Seed}; resume it with the same --objective and --seed");
            var saved = CheckpointStore.Restore(resumeFrom, module);
            optimizer.LoadState(saved);
            foreach (var tensor in saved.Values) tensor.Dispose();
        }
        if (state.Step >= totalSteps)
            throw new InvalidOperationException($"{request.OutputDirectory}: the run already finished its {totalSteps} steps (latest checkpoint {resumeFrom}); raise --steps to go on");
        using var metrics = collective.Writes()
            ? MetricsLog.Open(request.OutputDirectory, resumeFrom is null ? null : state.Step - 1, collective.WorldSize)
            : MetricsLog.Discard(collective.WorldSize);
        if (collective.Writes())
            RunRecord.Append(request.OutputDirectory, "pretrain", request, device, computeType.ToString().ToLowerInvariant(), collective.WorldSize, totalSteps,
                [RunInput.Model("model", request.Model), .. request.Shards is { } shards ? [RunInput.Shards(shards)] : Array.Empty<RunInput>(),
                 .. request.Data is { } data ? [RunInput.Dataset(data, request.Layout is { } layout ? MimFlow.Data.Sources.DatasetLayouts.Name(layout) : "recorded")] : Array.Empty<RunInput>()]);

        module.train();
        long step = state.Step, firstStep = step;
        var tracker = new StepTracker(metrics, request.MaxConsecutiveNonFinite, state.SkippedSteps);
        var clock = Stopwatch.StartNew();
        var waiting = new Stopwatch();
        string checkpoint = resumeFrom ?? "";
        var stepClock = Stopwatch.StartNew();
        var wait = Stopwatch.StartNew();
        waiting.Start();
        await foreach (var batch in input.ReadAsync(state.Epoch, state.BatchInEpoch, device, cancellationToken))
        {
            waiting.Stop();
            bool stop;
            double waited = wait.Elapsed.TotalSeconds;
            using (batch)
            using (var scope = NewDisposeScope())
            {
                double lr = schedule.ValueAt(step);
                var runner = compute ?? objective;
                var at = new StepPosition(step, totalSteps, batch.Epoch);
                var hooks = new StepHooks(
                    BeforeForward: shadow is null ? null : shadow.PullWeights,
                    AfterBackward: () =>
                    {
                        shadow?.PushGradients();
                        objective.AfterBackward(at);
                    },
                    AfterStep: () => objective.AfterStep(at));
                ObjectiveLoss? loss = null;
                var outcome = kernel.Step(step, lr, (nn.Module)runner, () =>
                {
                    loss = batch.Loss(runner);
                    return new LocalLoss(loss.Total, loss.Items ?? batch.Count, loss.ToMetrics());
                }, hooks, rank.Rows);
                using var ownedLoss = loss;
                var values = outcome.Metrics!;
                double total = outcome.Loss;
                double gradientNorm = outcome.GradientNorm;
                double seconds = stepClock.Elapsed.TotalSeconds;
                var terms = values.Where(p => p.Key != "loss").ToDictionary(p => p.Key, p => (object)p.Value);
                terms["grad_norm"] = gradientNorm;
                stop = tracker.Record(step, batch.Epoch, total, lr, rank.Rows.Global, seconds, waited, terms);
                progress?.Report(new PretrainProgress(step, totalSteps, total, rank.Rows.Global / seconds, waited / seconds, tracker.LastFigures));
            }
            step++;
            if (stop)
            {
                checkpoint = Save(store, step, batch.Epoch, batch.ResumePosition, tracker.Skipped, request, spec, backbone, module, optimizer, collective);
                throw new InvalidOperationException($"{tracker.StopReason(step - 1)}: stopped with a checkpoint in {checkpoint} (lower --lr, check the shards)");
            }
            if (step % request.CheckpointEvery == 0 || step == totalSteps)
                checkpoint = Save(store, step, batch.Epoch, batch.ResumePosition, tracker.Skipped, request, spec, backbone, module, optimizer, collective);
            if (step >= totalSteps) break;
            stepClock.Restart();
            wait.Restart();
            waiting.Start();
        }
        waiting.Stop();
        clock.Stop();
        return new PretrainResult(firstStep, step - 1, tracker.FirstLoss, tracker.LastLoss, tracker.Skipped, tracker.Images / Math.Max(clock.Elapsed.TotalSeconds, 1e-9),
            waiting.Elapsed.TotalSeconds / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), checkpoint);
    }

    /// <summary>The position is where the next step reads; an exhausted epoch yields nothing on resume and the next begins.
    /// Every rank checks the replicas agree; rank 0 writes (the others return the folder rank 0 writes).</summary>
    private static string Save(CheckpointStore store, long step, int epoch, long position, long skipped, PretrainRequest request,
        ModelSpec spec, VisionTransformer backbone, nn.Module module, FlatAdamW optimizer, ICollective collective)
    {
        if (collective.WorldSize > 1) DataParallel.VerifyReplicas(collective, optimizer.FlatParameters, step, request.OutputDirectory);
        if (!collective.Writes()) return Path.Combine(request.OutputDirectory, "checkpoints", $"step-{step:D8}");
        var state = new TrainerState(step, epoch, position, skipped, request.Objective, spec.Architecture, request.Seed);
        var optimizerState = optimizer.StateTensors();
        try { return store.Save(state, spec with { Config = backbone.Config }, backbone, module, optimizerState); }
        finally { foreach (var tensor in optimizerState.Values) tensor.Dispose(); }
    }

    /// <summary>The dataset the shards were tokenized from, in the layout and split the manifest records unless told otherwise.</summary>
    private static SampleIndex Originals(string data, DatasetLayout? layout, ShardManifest manifest)
    {
        var recorded = manifest.Configuration;
        var split = string.Equals(recorded.Split, "validation", StringComparison.OrdinalIgnoreCase) ? DatasetSplit.Validation : DatasetSplit.Train;
        if (layout is { } given) return DatasetSource.Open(data, given, split);
        DatasetLayout parsed;
        try { parsed = DatasetLayouts.Parse(recorded.Layout); }
        catch (ArgumentException) { throw new InvalidDataException($"the shards record the layout '{recorded.Layout}', which this version does not read; give --layout"); }
        return DatasetSource.Open(data, parsed, split);
    }

    /// <summary>The objective over the backbone, its input, and how to build the same objective over another backbone
    /// (the low-precision compute copy).</summary>
    private static (IMimObjective Objective, IPretrainingInput Input, Func<VisionTransformer, IMimObjective> Create) Build(PretrainRequest request, VisionTransformer backbone,
        ICollective collective)
    {
        var config = backbone.Config;
        var entry = PretrainingObjectives.Find(request.Objective);
        if (entry.Source == ObjectiveSource.Dataset)
        {
            var setup = new ObjectiveSetup(request, null);
            var objective = entry.Create(backbone, setup) as IMultiCropObjective
                ?? throw new InvalidOperationException($"{entry.Name} is registered as reading multi-crop views but does not implement them");
            var index = DatasetSource.Open(request.Data!, request.Layout ?? DatasetLayout.ImageNet);
            var rows = BatchSlice.Of(request.BatchSize, collective.Rank, collective.WorldSize);
            return (objective, new MultiCropInput(index, objective, request.BatchSize, request.LocalCrops, request.Seed, request.DecodeWorkers, rows), b => entry.Create(b, setup));
        }
        var manifest = ShardManifest.Read(request.Shards!);
        if (manifest.CodeLength > 0 && manifest.CodeLength != config.NumPatches)
            throw new ArgumentException($"{request.Shards}: {manifest.CodeLength} codes per image, but {request.Model} has {config.NumPatches} patches ({config.GridSize}×{config.GridSize})");
        var shardSetup = new ObjectiveSetup(request, manifest);
        var shardObjective = entry.Create(backbone, shardSetup) as IShardObjective
            ?? throw new InvalidOperationException($"{entry.Name} is registered as reading shards but does not take shard targets");
        var masks = new BlockwiseMaskGenerator(config.GridSize, config.GridSize, (int)Math.Round(request.MaskRatio * config.NumPatches),
            MinBlockPatches: Math.Min(16, Math.Max(1, config.NumPatches / 12)));
        var feeder = new ShardFeeder(request.Shards!, new FeederOptions
        {
            BatchSize = request.BatchSize, Seed = request.Seed, Masks = masks, DecodeWorkers = request.DecodeWorkers, ShuffleBuffer = request.ShuffleBuffer,
            Originals = request.Data is { } data ? Originals(data, request.Layout, manifest) : null,
            Rank = collective.Rank, WorldSize = collective.WorldSize,
        });
        return (shardObjective, new ShardInput(feeder), b => entry.Create(b, shardSetup));
    }
}
