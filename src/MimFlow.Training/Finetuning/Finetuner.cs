using System.Diagnostics;
using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Training.Distributed;
using MimFlow.Training.Kernel;
using MimFlow.Training.Optimization;
using MimFlow.Training.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Finetuning;

/// <summary>
/// What <c>mimflow finetune</c> runs. Defaults are BEiT's recipes: full fine-tuning as in unilm's
/// <c>beit/run_class_finetuning.py</c> with the BEiT-base ImageNet settings, linear probing as in
/// <c>beit/run_linear_eval.py</c>. Values left null take the task's default.
/// </summary>
public sealed record FinetuneRequest : SupervisedRequest
{
    public const string Classify = "classify";
    public const string LinearProbe = "linear-probe";

    /// <summary><see cref="Classify"/> (every weight trains) or <see cref="LinearProbe"/> (only the head does).</summary>
    public required string Task { get; init; }

    /// <summary>How <see cref="Data"/> is stored: imagenet (folders), wds or hf-parquet.</summary>
    public DatasetLayout Layout { get; init; } = DatasetLayout.ImageNet;

    /// <summary>Ground truth of a flat ImageNet val/ folder (file name, label per line).</summary>
    public string? GroundTruth { get; init; }

    /// <summary>Epochs over train/ (BEiT-base: 100 for fine-tuning, 100 for linear probing).</summary>
    public int Epochs { get; init; } = 100;

    /// <summary>Images per step; a last partial batch of an epoch is dropped (BEiT's drop_last).</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Train at this input size (positions resampled from the model's grid); null: the model's size.</summary>
    public int? ImageSize { get; init; }

    /// <summary>End of the cosine; null: 1e-6 (fine-tuning, BEiT's min_lr), 0 (linear probing, CosineAnnealingLR's eta_min).</summary>
    public double? MinLearningRate { get; init; }

    /// <summary>Linear warmup from 0; null: 5 epochs but at most a fifth of the run (fine-tuning), none (linear probing).</summary>
    public int? WarmupEpochs { get; init; }

    /// <summary>AdamW weight decay; null: 0.05 (fine-tuning), 1e-4 (linear probing).</summary>
    public double? WeightDecay { get; init; }

    /// <summary>
    /// RandAugment of the fine-tuning recipe (BEiT's <c>--aa rand-m9-mstd0.5-inc1</c>); null: none. Small or colour-coded
    /// datasets may want it off: at magnitude 9 posterize keeps one bit and solarize inverts almost every pixel.
    /// </summary>
    public RandAugment? RandAugment { get; init; } = new();

    /// <summary>Random erasing probability of the fine-tuning recipe (BEiT's <c>--reprob</c>).</summary>
    public double RandomErasing { get; init; } = 0.25;

    /// <summary>Mixup/CutMix for fine-tuning (off: smoothed one-hot targets only); never used for linear probing.</summary>
    public bool Mixup { get; init; } = true;

    /// <summary>The mixing and label smoothing settings; their <see cref="MixupOptions.LabelSmoothing"/> also applies without mixup.</summary>
    public MixupOptions MixupOptions { get; init; } = new();

    public bool IsLinearProbe => Task == LinearProbe;

    public void Validate()
    {
        if (Task is not (Classify or LinearProbe)) throw new ArgumentException($"unknown task '{Task}' ({Classify}, {LinearProbe})");
        if (!DatasetLayouts.CanClassify(Layout))
            throw new ArgumentException($"classification reads labelled data (--layout imagenet, wds or hf-parquet), not {DatasetLayouts.Name(Layout)}");
        ValidateShared();
        if (Epochs < 1 || BatchSize < 1) throw new ArgumentException("epochs and batch size must be at least 1");
        if (MinLearningRate is < 0 || WeightDecay is < 0) throw new ArgumentException("the minimum learning rate and weight decay must not be negative");
        if (WarmupEpochs is < 0 || WarmupEpochs > Epochs) throw new ArgumentException($"warmup epochs must lie in [0, {Epochs}] (got {WarmupEpochs})");
        if (RandomErasing is < 0 or > 1) throw new ArgumentException($"the random erasing probability must lie in [0, 1] (got {RandomErasing})");
        if (ImageSize is < 1) throw new ArgumentException("the image size must be positive");
        MixupOptions.Validate();
    }
}

/// <summary>
/// Image classification on top of a (pretrained) ViT, as BEiT evaluates its representations.
/// <para>
/// <b>classify</b>: full fine-tuning. The backbone is rebuilt with average pooling (<c>fc_norm</c> over the mean of
/// the patch tokens) and a new K-class head, initialised as BEiT's <c>modeling_finetune</c> does (truncated normal
/// 0.02, then weight and bias × init_scale 0.001, so the first logits are almost uniform and the early gradients do
/// not wreck the pretrained features); stochastic depth; AdamW (β 0.9/0.999) with BEiT's parameter groups and
/// layer-wise learning-rate decay; linear warmup then cosine per step; timm's Mixup/CutMix with label smoothing folded
/// into soft targets and the soft-target cross-entropy (without mixup, the smoothed one-hot targets, which is timm's
/// LabelSmoothingCrossEntropy). Training images go through <see cref="FinetuneRecipe"/> at the model's input size.
/// </para>
/// <para>
/// <b>linear-probe</b>: the backbone is frozen (no gradients, eval mode) and only a linear head trains on the
/// average of the last block's patch tokens, layer-normalised by <c>fc_norm</c> — the model's own "avg" pooling, so
/// the saved model directory forwards to the very logits the probe learned. BEiT's run_linear_eval concatenates [CLS]
/// with the patch average of every layer and trains one classifier per layer; one pooled feature of the final layer
/// is the simple, common variant. No BatchNorm: fc_norm (BEiT backbones keep it at its identity init through
/// pretraining) already standardises each feature vector, per image rather than per batch, so the probe does not
/// depend on batch statistics. Augmentation: RandomResizedCrop and flip only; no mixup, no smoothing; AdamW with weight
/// decay 1e-4 and a cosine to 0, head initialised with std 0.01 (BEiT's linear eval).
/// </para>
/// <para>
/// Loading a backbone: its weights are copied by name into the classifier; the mask token, a token-pooled model's
/// final <c>norm</c> and any old head are left out, and a missing <c>fc_norm</c> starts at 1/0 (as BEiT's and MAE's
/// fine-tuning load non-strictly); a shared relative position bias is copied into every block's own table, as
/// run_class_finetuning does by default. Everything else must be present with its shape (position tables are
/// resampled when the input size changes).
/// </para>
/// <para>
/// Outputs in the run folder: <c>metrics.jsonl</c> (per step: step, epoch, loss, lr, images_per_second, input_wait,
/// mix, lambda), <c>eval.json</c> (rewritten after each epoch: every epoch's top-1/top-5/loss and the last epoch's
/// per-class table), and after each epoch a checkpoint (<see cref="SupervisedCheckpoints{TEvaluation}"/>) whose
/// <c>backbone/</c> is the whole classifier, head included. On CPU a run is a function of its seed: batches,
/// augmentations, mixing (a StableRandom from (seed, step)) and stochastic depth (a generator from (seed, step)) are
/// all derived from it, so <see cref="FinetuneRequest.Resume"/> continues from the last epoch's checkpoint exactly.
/// </para>
/// </summary>
public static class Finetuner
{
    public const string EvalFileName = "eval.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <param name="collective">Data parallelism (null: one process): each rank computes its rows of every global batch
    /// of <see cref="FinetuneRequest.BatchSize"/>; Mixup/CutMix pairs images within a rank's rows (as timm's Mixup does
    /// on each GPU); rank 0 alone evaluates and writes the run folder.</param>
    public static async Task<SupervisedResult<EvaluationResult>> RunAsync(FinetuneRequest request, IProgress<SupervisedProgress<EvaluationResult>>? progress = null, CancellationToken cancellationToken = default,
        ICollective? collective = null)
    {
        request.Validate();
        bool probe = request.IsLinearProbe;
        using var supervised = SupervisedRun<FinetuneRequest, EvaluationResult>.Open(request, request.Task, request.BatchSize, request.Epochs, collective);
        if (supervised.Finished is { } finished) return finished;
        (collective, var rows, var device, var run) = (supervised.Collective, supervised.Rows, supervised.Device, supervised.Checkpoints);

        var train = DatasetSource.Open(request.Data, request.Layout, DatasetSplit.Train);
        int classes = train.Classes.Count;
        if (train.HasAnnotations) throw new ArgumentException($"{request.Data}: its samples carry label maps (segmentation data): use --task segment");
        if (classes < 2 || train.CountLabelled() == 0)
            throw new ArgumentException($"{request.Data}: {classes} class(es) and {train.CountLabelled()} labelled image(s) in the training split; classification needs at least 2 classes");
        var validation = request.EvaluateEachEpoch ? DatasetSource.Open(request.Data, request.Layout, DatasetSplit.Validation, request.GroundTruth) : null;
        if (validation is { Count: 0 }) throw new ArgumentException($"{request.Data}: val/ holds no images (or turn evaluation off)");
        long perEpoch = supervised.StepsPerEpoch(train.Count);
        long totalSteps = request.Epochs * perEpoch;

        var (spec, model) = BuildClassifier(request, classes);
        using var ownedModel = model;
        model.to(device);
        if (probe)
            foreach (var (name, parameter) in model.named_parameters())
                parameter.requires_grad = name.StartsWith("head.", StringComparison.Ordinal);

        double weightDecay = request.WeightDecay ?? (probe ? 1e-4 : 0.05);
        using var optimizer = new FlatAdamW(
            ParameterGroups.Build(model, new ParameterGroupOptions { LayerDecay = probe || request.LayerDecay == 1 ? null : request.LayerDecay }),
            new AdamWOptions { Beta2 = 0.999, WeightDecay = weightDecay });
        double lr = request.LearningRate ?? (probe ? 1e-3 * request.BatchSize / 256 : 4e-3 * request.BatchSize / 1024);
        long warmup = request.WarmupEpochs is int epochs ? epochs * perEpoch : probe ? 0 : Math.Min(5 * perEpoch, totalSteps / 5);
        var schedule = CosineSchedule.LearningRate(lr, request.MinLearningRate ?? (probe ? 0 : 1e-6), totalSteps, warmup);
        run.Restore(spec.Architecture, model, optimizer);
        var start = run.Start(perEpoch);
        // The linear probe's head is not clipped (BEiT's linear eval); fine-tuning clips only when asked.
        var kernel = new TrainerKernel(optimizer, request.Seed, device, probe ? null : request.ClipGradient, collective);

        int size = model.Config.ImgSize;
        IAugmentRecipe recipe = probe
            ? new FinetuneRecipe(size) { Augment = new RandAugment(Layers: 0), Erasing = new RandomErasing(Probability: 0) }
            : new FinetuneRecipe(size)
            {
                Augment = request.RandAugment ?? new RandAugment(Layers: 0), Erasing = new RandomErasing(Probability: request.RandomErasing),
            };
        var mixer = !probe && request.Mixup ? new MixupCutmix(request.MixupOptions, classes) : null;
        double smoothing = probe ? 0 : request.MixupOptions.LabelSmoothing;
        var evalOptions = new EvaluateOptions
        {
            BatchSize = request.EvalBatchSize ?? Math.Max(1, (int)(1.5 * request.BatchSize)), DecodeWorkers = request.DecodeWorkers,
        };

        if (probe) model.eval();
        else model.train();
        return await supervised.TrainAsync(new SupervisedLoop<EvaluationResult>(train, recipe, request.Layout, totalSteps, start, schedule.ValueAt, optimizer,
            (batch, at, rate) =>
            {
                var outcome = probe
                    ? ProbeStep(kernel, model, batch, device, rate, at, rows)
                    : ClassifyStep(kernel, model, mixer, batch, device, rate, smoothing, classes, request, at, rows);
                var terms = probe ? null : new Dictionary<string, object>
                {
                    ["mix"] = outcome.Mix.Kind.ToString().ToLowerInvariant(), ["lambda"] = outcome.Mix.Lambda,
                };
                return new SupervisedStep(outcome.Loss, outcome.Images, terms);
            },
            validation is null ? null : cancel => Evaluator.EvaluateAsync(model, validation, evalOptions, cancel),
            result => new Dictionary<string, double> { ["eval/top1"] = result.Top1, ["eval/top5"] = result.Top5, ["eval/loss"] = result.Loss },
            evaluations => WriteEvaluations(request.OutputDirectory, evaluations), spec with { Config = model.Config }, model, model), progress, cancellationToken);
    }

    private readonly record struct ClassifyOutcome(double Loss, int Images, MixDraw Mix);

    /// <summary>One fine-tuning step; synchronous, so its dispose scope and grad mode stay on one thread.</summary>
    private static ClassifyOutcome ClassifyStep(TrainerKernel kernel, VisionTransformer model, MixupCutmix? mixer, Batch batch, Device device, double lr,
        double smoothing, int classes, FinetuneRequest request, long step, BatchSlice rows)
    {
        using var scope = NewDisposeScope();
        var (pixels, labels) = Evaluator.Upload(batch, device);
        var random = StableRandom.For(request.Seed, "mixup", (ulong)step);
        var (inputs, targets, draw) = mixer is null
            ? (pixels, MixupCutmix.Targets(labels, classes, 1.0, smoothing), new MixDraw(MixKind.None, 1.0, null))
            : mixer.Apply(pixels, labels, ref random);
        var outcome = kernel.Step(step, lr, model, () => MixupCutmix.SoftTargetCrossEntropy(model.ForwardHead(model.ForwardFeatures(inputs)), targets), rows: rows);
        return new ClassifyOutcome(outcome.Loss, batch.Count, draw);
    }

    /// <summary>One linear-probe step: frozen features without autograd, then the head alone with plain cross-entropy.</summary>
    private static ClassifyOutcome ProbeStep(TrainerKernel kernel, VisionTransformer model, Batch batch, Device device, double lr, long step, BatchSlice rows)
    {
        using var scope = NewDisposeScope();
        var (pixels, labels) = Evaluator.Upload(batch, device);
        var outcome = kernel.Step(step, lr, model, () =>
        {
            Tensor features;
            using (no_grad()) features = model.ForwardFeatures(pixels);
            return nn.functional.cross_entropy(model.ForwardHead(features), labels);
        }, rows: rows);
        return new ClassifyOutcome(outcome.Loss, batch.Count, new MixDraw(MixKind.None, 1.0, null));
    }

    /// <summary>
    /// The classifier for <paramref name="classes"/> classes: average pooling, a new head, BEiT's initialisation for
    /// whatever the source does not provide, then the source's weights (see the class remarks for what is copied).
    /// </summary>
    public static (ModelSpec Spec, VisionTransformer Model) BuildClassifier(FinetuneRequest request, int classes)
    {
        bool probe = request.IsLinearProbe;
        var source = BackboneSource.Resolve(request.Model, "classifier", request.ImageSize);
        var config = source.Config with
        {
            GlobalPool = "avg", NumClasses = classes, UseMaskToken = false, DropPathRate = probe ? 0 : request.DropPath,
            // BEiT fine-tunes a shared relative position bias as one table per block, each starting from the shared one.
            UseRelPosBias = source.Config.UseRelPosBias || source.Config.UseSharedRelPosBias, UseSharedRelPosBias = false,
        };
        var model = new VisionTransformer(config);
        try
        {
            Initialization.Apply(model, (long)request.Seed);
            using (no_grad())
            {
                var head = model.named_parameters().Where(p => p.name.StartsWith("head.", StringComparison.Ordinal)).ToList();
                // BEiT's init_scale (0.001) for fine-tuning; std 0.01 = 0.02 × 0.5 for the linear probe (run_linear_eval).
                foreach (var (_, parameter) in head) parameter.mul_(probe ? 0.5 : 0.001);
            }
            BackboneSource.CopyWeights(source, model, new BackboneTransfer("classifier", NotCopied: ["head."], MayBeMissing: ["fc_norm."]));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return (source.Spec with { Config = config }, model);
    }

    private static void WriteEvaluations(string runDirectory, IReadOnlyList<EpochEvaluation<EvaluationResult>> evaluations)
    {
        var last = evaluations[^1].Result;
        var document = new
        {
            epochs = evaluations.Select(e => new
            {
                epoch = e.Epoch, step = e.Step, images = e.Result.Images, top1 = e.Result.Top1, top5 = e.Result.Top5, loss = e.Result.Loss,
                quarantined = e.Result.Quarantined,
            }),
            best_top1 = evaluations.Max(e => e.Result.Top1),
            per_class = last.PerClass.Select(c => new { @class = c.Class, name = c.Name, images = c.Images, top1 = c.Images == 0 ? (double?)null : c.Top1 }),
        };
        AtomicFile.WriteAllText(Path.Combine(runDirectory, EvalFileName), JsonSerializer.Serialize(document, Json));
    }
}
