using System.Diagnostics;
using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Distributed;
using MimFlow.Training.Kernel;
using MimFlow.Training.Optimization;
using MimFlow.Training.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// What <c>mimflow finetune --task segment</c> runs. Optimiser and schedule defaults are BEiT-base's self-supervised
/// ADE20K recipe (unilm <c>semantic_segmentation/configs/beit/upernet/upernet_beit_base_12_512_slide_160k_ade20k.py</c>:
/// AdamW lr 4e-4, β 0.9/0.999, weight decay 0.05, layer decay 0.65, drop path 0.1, 8 GPUs × 2 images, 160k iterations,
/// linear warmup 1500 iterations then poly with power 1 to 0), with its UperNet decoder (<see cref="UperNetHead"/>)
/// and sliding-window evaluation; SETR-PUP (<see cref="SegmentationHead"/>) is the light alternative.
/// </summary>
public sealed record SegmentRequest : SupervisedRequest
{
    /// <summary>How <see cref="Data"/> is stored: ade20k (folders), wds or hf-parquet.</summary>
    public DatasetLayout Layout { get; init; } = DatasetLayout.Ade20k;

    /// <summary>Epochs over the training split; 127 ≈ BEiT's 160k iterations × 16 images over ADE20K's 20,210.</summary>
    public int Epochs { get; init; } = 127;

    /// <summary>Images per step (BEiT: 16); a last partial batch of an epoch is dropped.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>
    /// Training crop and model input size (BEiT: 512). The backbone is rebuilt at this size; loaded weights have their
    /// absolute positions and relative position tables resampled to the new patch grid.
    /// </summary>
    public int CropSize { get; init; } = 512;

    /// <summary>End of the poly decay (mmseg's min_lr 0).</summary>
    public double MinLearningRate { get; init; }

    /// <summary>Linear warmup steps; null: BEiT's 1500 but at most a tenth of the run.</summary>
    public long? WarmupSteps { get; init; }

    /// <summary>Poly power (BEiT: 1, i.e. linear decay).</summary>
    public double PolyPower { get; init; } = 1.0;

    public double WeightDecay { get; init; } = 0.05;

    /// <summary><see cref="UperNetDecoder"/> (BEiT's) or <see cref="SetrDecoder"/>.</summary>
    public string Decoder { get; init; } = UperNetDecoder;

    public const string UperNetDecoder = "upernet";
    public const string SetrDecoder = "setr-pup";

    /// <summary>The SETR-PUP head's shape (with <see cref="Decoder"/> setr-pup).</summary>
    public SegmentationHeadConfig Head { get; init; } = new();

    /// <summary>The UperNet head's shape (with <see cref="Decoder"/> upernet).</summary>
    public UperNetConfig UperNet { get; init; } = new();

    /// <summary>How each epoch's evaluation scores the validation split (BEiT: sliding window).</summary>
    public SegmentationEvalMode EvalMode { get; init; } = SegmentationEvalMode.Slide;

    public void Validate()
    {
        if (!DatasetLayouts.CanSegment(Layout))
            throw new ArgumentException($"segmentation reads images with label maps (--layout ade20k, wds or hf-parquet), not {DatasetLayouts.Name(Layout)}");
        ValidateShared();
        if (Epochs < 1 || BatchSize < 1) throw new ArgumentException("epochs and batch size must be at least 1");
        if (CropSize < 1) throw new ArgumentException($"the crop size must be positive (got {CropSize})");
        if (MinLearningRate < 0 || WeightDecay < 0) throw new ArgumentException("the minimum learning rate and weight decay must not be negative");
        if (WarmupSteps is < 0) throw new ArgumentException($"warmup steps must not be negative (got {WarmupSteps})");
        if (PolyPower <= 0) throw new ArgumentException($"the poly power must be positive (got {PolyPower})");
        if (Decoder is not (UperNetDecoder or SetrDecoder)) throw new ArgumentException($"unknown decoder '{Decoder}' ({UperNetDecoder} or {SetrDecoder})");
        Head.Validate();
        UperNet.Validate();
    }
}

/// <summary>What a segmentation checkpoint needs besides its weights to be rebuilt: <c>segmenter.json</c> in the checkpoint folder.</summary>
/// <param name="Decoder">null in files written before UperNet existed: SETR-PUP.</param>
public sealed record SegmenterFile(int Classes, int CropSize, SegmentationHeadConfig Head, string? Decoder = null, UperNetConfig? UperNet = null)
{
    /// <summary>A new decode head of this shape (weights to be loaded or trained).</summary>
    public DecodeHead CreateHead(VitConfig backbone, long seed) => (Decoder ?? SegmentRequest.SetrDecoder) == SegmentRequest.UperNetDecoder
        ? new UperNetHead(backbone.EmbedDim, backbone.Depth, Classes, UperNet ?? new UperNetConfig(), seed)
        : new SegmentationHead(backbone.EmbedDim, Classes, Head, seed);
}

/// <summary>
/// Semantic segmentation on top of a (pretrained) ViT, as BEiT evaluates its representations on ADE20K: UperNet (or
/// SETR-PUP) on the backbone, sliding-window evaluation.
/// <para>
/// The backbone is rebuilt at <see cref="SegmentRequest.CropSize"/> without head or mask token, with stochastic
/// depth, and (as BEiT's segmentation backbone does) one relative position table per block, each starting from a
/// shared one; loaded weights are resampled to the crop's patch grid by <see cref="ModelDirectory.LoadVit"/>.
/// Training: <see cref="SegmentationRecipe"/> (mmseg's ADE20K pipeline) with its (2048, 512) scale scaled to the crop
/// size (4·crop, crop), pixel cross-entropy averaged over labelled pixels (ignore index 255), AdamW with BEiT's
/// parameter groups and layer decay on the backbone (the head is the top "layer", full rate), linear warmup then poly
/// decay per step (<see cref="PolySchedule"/>, mmseg's per-iteration schedule rather than the classification cosine).
/// </para>
/// <para>
/// Evaluation after each epoch: <see cref="SegmentationEvalRecipe"/> (mmseg's keep-ratio rescale and sliding window, or
/// a centre crop) and <see cref="MeanIoU"/>; with UperNet, the auxiliary FCN head's loss (weight 0.4) joins training. Outputs: <c>metrics.jsonl</c> (per step:
/// step, epoch, loss, lr, images_per_second, input_wait), <c>eval.json</c> (every epoch's mIoU / pixel accuracy /
/// loss, and the last epoch's per-class IoU table with ADE20K's class names), and after each epoch a checkpoint
/// (<see cref="SupervisedCheckpoints{TEvaluation}"/>) whose <c>backbone/</c> is the fine-tuned ViT (a model
/// directory), whose <c>training.safetensors</c> holds the whole segmenter (<c>backbone.*</c>, <c>decode_head.*</c>)
/// and the optimiser, plus <c>segmenter.json</c>, which <see cref="Load"/> reads to rebuild it. On CPU a run is a
/// function of its seed, so <see cref="SegmentRequest.Resume"/> continues from the last epoch's checkpoint exactly.
/// </para>
/// </summary>
public static class Segmenter
{
    public const string Task = "segment";
    public const string EvalFileName = "eval.json";
    public const string SegmenterFileName = "segmenter.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <param name="collective">
    /// Data parallelism (null: one process): each rank computes its rows of every global batch and the loss is the mean
    /// over the global batch's valid pixels. What differs from one process: the decode heads' BatchNorm normalises each
    /// rank's rows by their own statistics (B/N images, not B: PyTorch DDP without SyncBatchNorm) and keeps rank 0's
    /// running statistics, which rank 0's evaluation and checkpoints use.
    /// </param>
    public static async Task<SupervisedResult<SegmentationMetrics>> RunAsync(SegmentRequest request, IProgress<SupervisedProgress<SegmentationMetrics>>? progress = null, CancellationToken cancellationToken = default,
        ICollective? collective = null)
    {
        request.Validate();
        using var supervised = SupervisedRun<SegmentRequest, SegmentationMetrics>.Open(request, Task, request.BatchSize, request.Epochs, collective);
        if (supervised.Finished is { } finished) return finished;
        (collective, var rows, var device, var run) = (supervised.Collective, supervised.Rows, supervised.Device, supervised.Checkpoints);

        var train = DatasetSource.Open(request.Data, request.Layout, DatasetSplit.Train);
        RequireLabelMaps(train);
        int classes = train.Classes.Count;
        var validation = request.EvaluateEachEpoch ? DatasetSource.Open(request.Data, request.Layout, DatasetSplit.Validation) : null;
        if (validation is { Count: 0 }) throw new ArgumentException($"{request.Data}: the validation split holds no images (or turn evaluation off)");
        long perEpoch = supervised.StepsPerEpoch(train.Count);
        long totalSteps = request.Epochs * perEpoch;

        var (spec, model) = Build(request, classes);
        using var ownedModel = model;
        model.to(device);

        using var optimizer = new FlatAdamW(
            ParameterGroups.Build(model, new ParameterGroupOptions
            {
                LayerDecay = request.LayerDecay == 1 ? null : request.LayerDecay, Depth = model.Backbone.Config.Depth,
            }),
            new AdamWOptions { Beta2 = 0.999, WeightDecay = request.WeightDecay });
        double lr = request.LearningRate ?? 4e-4 * request.BatchSize / 16;
        long warmup = request.WarmupSteps ?? Math.Min(1500, totalSteps / 10);
        var schedule = new PolySchedule(lr, request.MinLearningRate, totalSteps, warmup, request.PolyPower);
        run.Restore(spec.Architecture, model, optimizer);
        var start = run.Start(perEpoch);
        var kernel = new TrainerKernel(optimizer, request.Seed, device, request.ClipGradient, collective);

        int crop = request.CropSize;
        var recipe = new SegmentationRecipe(CropSize: crop, LongScale: 4 * crop, ShortScale: crop);
        var evalOptions = new SegmentEvaluateOptions { BatchSize = request.EvalBatchSize ?? request.BatchSize, DecodeWorkers = request.DecodeWorkers, Mode = request.EvalMode };

        var segmenterFile = new Dictionary<string, string> { [SegmenterFileName] = JsonSerializer.Serialize(FileOf(request, classes), Json) };
        model.train();
        return await supervised.TrainAsync(new SupervisedLoop<SegmentationMetrics>(train, recipe, request.Layout, totalSteps, start, schedule.ValueAt, optimizer,
            (batch, at, rate) => new SupervisedStep(TrainStep(kernel, model, batch, device, rate, request, at, rows), batch.Count),
            validation is null ? null : cancel => EvaluateAsync(model, validation, evalOptions, cancel),
            result => new Dictionary<string, double> { ["eval/miou"] = result.MeanIou, ["eval/pixel_accuracy"] = result.PixelAccuracy, ["eval/loss"] = result.Loss },
            evaluations => WriteEvaluations(request.OutputDirectory, evaluations), spec, model.Backbone, model, segmenterFile), progress, cancellationToken);
    }

    /// <summary>One step; synchronous, so its dispose scope and grad mode stay on one thread.</summary>
    private static double TrainStep(TrainerKernel kernel, SegmentationModel model, Batch batch, Device device, double lr, SegmentRequest request, long step, BatchSlice rows)
    {
        using var scope = NewDisposeScope();
        var (pixels, labels) = Upload(batch, device);
        bool parallel = kernel.Collective.WorldSize > 1;
        return kernel.Step(step, lr, model, () =>
        {
            var (logits, auxiliary) = model.ForwardTraining(pixels);
            var loss = nn.functional.cross_entropy(logits, labels, ignore_index: SegmentationRecipe.Ignore);
            var total = auxiliary is null ? loss
                : loss + request.UperNet.AuxiliaryWeight * nn.functional.cross_entropy(auxiliary, labels, ignore_index: SegmentationRecipe.Ignore);
            // Both cross-entropies average over the valid (not ignored) pixels: those are the items across ranks.
            long items = parallel ? labels.ne(SegmentationRecipe.Ignore).sum().item<long>() : rows.Count;
            return new LocalLoss(total, items);
        }, rows: rows).Loss;
    }

    /// <summary>A float32 segmentation batch as pixels [B, 3, S, S] and int64 label maps [B, S, S] (255 = ignored) on <paramref name="device"/>.</summary>
    internal static (Tensor Pixels, Tensor Labels) Upload(Batch batch, Device device)
    {
        var view = batch.Views[0];
        var pixels = tensor(batch.ViewFloats(0).ToArray(), [batch.Count, 3, view.Height, view.Width]);
        var maps = batch.LabelMaps.AsSpan(0, batch.Count * batch.LabelMapCells);
        long[] values = new long[maps.Length];
        for (int i = 0; i < maps.Length; i++) values[i] = maps[i];
        var labels = tensor(values, [batch.Count, view.Height, view.Width]);
        return device.type == DeviceType.CPU ? (pixels, labels) : (pixels.to(device), labels.to(device));
    }

    /// <summary>
    /// The segmenter for <paramref name="classes"/> classes at the request's crop size: the backbone (loaded and
    /// resampled, or initialised as BEiT does for an architecture name) and a new head.
    /// </summary>
    public static (ModelSpec BackboneSpec, SegmentationModel Model) Build(SegmentRequest request, int classes)
    {
        var source = BackboneSource.Resolve(request.Model, "segmentation backbone", request.CropSize);
        var config = source.Config with
        {
            NumClasses = 0, UseMaskToken = false, DropPathRate = request.DropPath,
            UseRelPosBias = source.Config.UseRelPosBias || source.Config.UseSharedRelPosBias, UseSharedRelPosBias = false,
        };
        var backbone = new VisionTransformer(config);
        DecodeHead? head = null;
        try
        {
            Initialization.Apply(backbone, (long)request.Seed);
            BackboneSource.CopyWeights(source, backbone, new BackboneTransfer("segmentation backbone", NotCopied: [], MayBeMissing: ["fc_norm.", "norm."]));
            head = FileOf(request, classes).CreateHead(config, (long)StableRandom.For(request.Seed, "segmentation-head").NextUInt64());
            return (source.Spec with { Config = config }, new SegmentationModel(backbone, head));
        }
        catch
        {
            head?.Dispose();
            backbone.Dispose();
            throw;
        }
    }

    private static SegmenterFile FileOf(SegmentRequest request, int classes) =>
        new(classes, request.CropSize, request.Head, request.Decoder, request.Decoder == SegmentRequest.UperNetDecoder ? request.UperNet : null);

    /// <summary>The checkpoint a path names: a checkpoint folder (with <c>segmenter.json</c>) or a run folder (its latest).</summary>
    public static string ResolveCheckpoint(string path)
    {
        if (File.Exists(Path.Combine(path, SegmenterFileName))) return path;
        if (Directory.Exists(path) && new CheckpointStore(path).Latest() is { } latest && File.Exists(Path.Combine(latest, SegmenterFileName))) return latest;
        throw new ArgumentException($"{path}: neither a segmentation checkpoint ({SegmenterFileName}) nor a segmentation run folder");
    }

    /// <summary>Rebuilds a saved segmenter from a checkpoint or run folder (weights restored strictly).</summary>
    public static (SegmenterFile File, SegmentationModel Model) Load(string path)
    {
        string checkpoint = ResolveCheckpoint(path);
        var file = JsonSerializer.Deserialize<SegmenterFile>(File.ReadAllText(Path.Combine(checkpoint, SegmenterFileName)), Json)
            ?? throw new InvalidDataException($"{checkpoint}: empty {SegmenterFileName}");
        var (_, backbone) = ModelDirectory.LoadVit(Path.Combine(checkpoint, "backbone"));
        SegmentationModel? model = null;
        try
        {
            model = new SegmentationModel(backbone, file.CreateHead(backbone.Config, 0));
            foreach (var tensor in CheckpointStore.Restore(checkpoint, model).Values) tensor.Dispose();
            return (file, model);
        }
        catch
        {
            if (model is not null) model.Dispose();
            else backbone.Dispose();
            throw;
        }
    }

    /// <summary>Loads a saved segmenter and evaluates it on <paramref name="data"/>.</summary>
    /// <param name="progress">Images scored so far (of <c>data.Count</c>).</param>
    public static async Task<SegmentationMetrics> EvaluateAsync(string path, SampleIndex data, SegmentEvaluateOptions? options = null, CancellationToken cancellationToken = default,
        IProgress<int>? progress = null)
    {
        options ??= new SegmentEvaluateOptions();
        var (_, model) = Load(path);
        using (model)
        {
            model.to(options.Device ?? CPU);
            return await EvaluateAsync(model, data, options, cancellationToken, progress);
        }
    }

    /// <summary>
    /// mIoU, pixel accuracy and per-class IoU of <paramref name="model"/> on a labelled split, where the model is, in
    /// eval mode (training mode restored afterwards); see <see cref="SegmentationEvalRecipe"/> for the view scored.
    /// </summary>
    public static async Task<SegmentationMetrics> EvaluateAsync(SegmentationModel model, SampleIndex data, SegmentEvaluateOptions? options = null, CancellationToken cancellationToken = default,
        IProgress<int>? progress = null)
    {
        options ??= new SegmentEvaluateOptions();
        options.Validate();
        int classes = model.Head.Classes;
        RequireLabelMaps(data);
        EvaluationPass.RequireClasses(data, classes, "the segmenter predicts");
        var device = model.parameters().First().device;
        int crop = model.Backbone.Config.ImgSize;
        var counter = new MeanIoU(classes, SegmentationRecipe.Ignore);
        // A sliding-window view is a (4·crop)² canvas: keep few in flight.
        int quarantined = await EvaluationPass.RunAsync(model, data, new SegmentationEvalRecipe(crop, Mode: options.Mode),
            options.Mode == SegmentationEvalMode.Slide ? 1 : options.BatchSize, options.DecodeWorkers, batch =>
            {
                var (pixels, labels) = Upload(batch, device);
                var logits = options.Mode == SegmentationEvalMode.Slide ? SlideLogits(model, pixels, batch, crop, options.BatchSize) : model.forward(pixels);
                long[] predicted = logits.argmax(1).cpu().contiguous().data<long>().ToArray();
                counter.Add(predicted, batch.LabelMaps.AsSpan(0, batch.Count * batch.LabelMapCells), batch.Count);
                var labelled = labels.ne(SegmentationRecipe.Ignore).sum().item<long>();
                if (labelled > 0)
                    counter.AddLoss(nn.functional.cross_entropy(logits.to(ScalarType.Float32), labels, ignore_index: SegmentationRecipe.Ignore,
                        reduction: nn.Reduction.Sum).item<float>(), labelled);
            }, cancellationToken, progress);
        return counter.Result(data.Classes, quarantined);
    }

    /// <summary>
    /// mmseg's slide_inference per image: crop-sized windows over the image's extent (<see cref="SegmentationEvalRecipe.SlidingWindows"/>),
    /// run <paramref name="windowBatch"/> at a time, overlapping logits averaged. Logits outside the image stay 0;
    /// their labels are all ignored.
    /// </summary>
    private static Tensor SlideLogits(SegmentationModel model, Tensor pixels, Batch batch, int crop, int windowBatch)
    {
        long canvas = pixels.shape[2];
        var logits = zeros(pixels.shape[0], model.Head.Classes, canvas, canvas, device: pixels.device);
        for (int i = 0; i < batch.Count; i++)
        {
            var view = batch.Params[i].Views[0];
            var windows = SegmentationEvalRecipe.SlidingWindows(view.Height, view.Width, crop);
            var counts = zeros(1, 1, canvas, canvas, device: pixels.device);
            foreach (var chunk in windows.Chunk(windowBatch))
            {
                var crops = stack(chunk.Select(w => pixels[i, .., w.Top..(w.Top + crop), w.Left..(w.Left + crop)]).ToArray());
                var output = model.forward(crops).to(ScalarType.Float32);
                for (int k = 0; k < chunk.Length; k++)
                {
                    var (top, left) = chunk[k];
                    logits[i, .., top..(top + crop), left..(left + crop)].add_(output[k]);
                    counts[0, .., top..(top + crop), left..(left + crop)].add_(1);
                }
            }
            logits[i].div_(counts[0].clamp_min(1));
        }
        return logits;
    }

    private static void RequireLabelMaps(SampleIndex data)
    {
        if (!data.HasAnnotations)
            throw new ArgumentException($"{data.Root}: no label maps ({data.Layout}); segmentation needs ADE20K-style annotations (wds: .seg.png members, hf-parquet: an 'annotation' column)");
    }

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

    private static void WriteEvaluations(string runDirectory, IReadOnlyList<EpochEvaluation<SegmentationMetrics>> evaluations) =>
        AtomicFile.WriteAllText(Path.Combine(runDirectory, EvalFileName), EvaluationJson(evaluations));

    /// <summary>eval.json: every epoch's figures, the best mIoU, and the last epoch's per-class table (classes never seen: IoU null).</summary>
    public static string EvaluationJson(IReadOnlyList<EpochEvaluation<SegmentationMetrics>> evaluations)
    {
        var last = evaluations[^1].Result;
        var document = new
        {
            epochs = evaluations.Select(e => new
            {
                epoch = e.Epoch, step = e.Step, images = e.Result.Images, labelled_pixels = e.Result.LabelledPixels, miou = Finite(e.Result.MeanIou),
                pixel_accuracy = Finite(e.Result.PixelAccuracy), mean_accuracy = Finite(e.Result.MeanAccuracy), loss = Finite(e.Result.Loss),
                quarantined = e.Result.Quarantined,
            }),
            best_miou = evaluations.Select(e => e.Result.MeanIou).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Max() is var best && double.IsFinite(best) ? best : (double?)null,
            miou = Finite(last.MeanIou),
            pixel_accuracy = Finite(last.PixelAccuracy),
            per_class = last.PerClass.Select(c => new
            {
                @class = c.Class, name = c.Name, iou = Finite(c.Iou), accuracy = Finite(c.Accuracy), truth_pixels = c.TruthPixels, predicted_pixels = c.PredictedPixels,
            }),
        };
        return JsonSerializer.Serialize(document, Json);
    }
}

/// <summary>How <see cref="Segmenter"/> reads an evaluation split.</summary>
public sealed record SegmentEvaluateOptions
{
    public int BatchSize { get; init; } = 8;
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>Where a loaded segmenter runs (a given model stays where it is).</summary>
    public Device? Device { get; init; }

    /// <summary>Sliding window (mmseg's test) or centre crop; with a sliding window the batch counts windows per forward.</summary>
    public SegmentationEvalMode Mode { get; init; } = SegmentationEvalMode.Slide;

    public void Validate()
    {
        if (BatchSize < 1 || DecodeWorkers < 1) throw new ArgumentException("the evaluation batch size and decode workers must be at least 1");
    }
}
