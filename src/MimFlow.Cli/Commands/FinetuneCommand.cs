using MimFlow.Core.Status;
using MimFlow.Cli.Reporting;
using System.CommandLine;
using System.Globalization;
using MimFlow.Core.IO;
using MimFlow.Data.Sources;
using MimFlow.Training.Distributed;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Runs;
using MimFlow.Training.Segmentation;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>
/// The options of <c>mimflow finetune</c> and how they become a request: only what the user typed is applied onto the
/// request record's defaults (BEiT's recipes live there, one per task), and an option of another task is refused.
/// </summary>
internal sealed class FinetuneOptions
{
    private static readonly FinetuneRequest Classify = new() { Task = FinetuneRequest.Classify, Model = "", Data = "", OutputDirectory = "" };
    private static readonly SegmentRequest Segment = new() { Model = "", Data = "", OutputDirectory = "" };

    public Option<string> Task { get; } = Choice("--task", "classify (full fine-tuning), linear-probe (frozen backbone, only the head trains) or segment (ADE20K: UperNet or SETR-PUP)",
        FinetuneRequest.Classify, FinetuneRequest.LinearProbe, Segmenter.Task);
    public Option<string> Model { get; } = new("--model") { Description = "A ViT model directory (a pretraining run folder or checkpoint backbone/, an imported model) or an architecture for random init", Required = true };
    public DataOptions Data { get; } = new(defaultSplit: null, layoutOptional: true, layouts: ["imagenet", "ade20k", "wds", "hf-parquet"],
        dataDescription: $"Labelled dataset: its train split to learn from, its val split to evaluate each epoch (a root folder; wds, hf-parquet: shards). --layout default: {DatasetLayouts.Name(Classify.Layout)} (classify), {DatasetLayouts.Name(Segment.Layout)} (segment)");
    public Option<string> Output { get; } = new("--out") { Description = "Run folder: metrics.jsonl, eval.json, checkpoints/ (one per epoch; backbone/ is the fine-tuned model)", Required = true };
    public Option<int?> Epochs { get; } = new("--epochs") { Description = $"Epochs over the training split (default {Classify.Epochs} classify, {Segment.Epochs} segment)" };
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per step; a last partial batch is dropped (default {Classify.BatchSize} classify, {Segment.BatchSize} segment)" };
    public Option<double?> LearningRate { get; } = new("--lr") { Description = "Peak learning rate (default: 4e-3·batch/1024 classify, 1e-3·batch/256 linear-probe, 4e-4·batch/16 segment)" };
    public Option<double?> MinLearningRate { get; } = new("--min-lr") { Description = "Learning rate at the end of the schedule (default: 1e-6 classify, 0 linear-probe and segment)" };
    public Option<double?> LayerDecay { get; } = new("--layer-decay") { Description = $"Layer-wise learning-rate decay (BEiT: 0.65 base, 0.75 large; 1: off; default {Classify.LayerDecay})" };
    public Option<double?> WeightDecay { get; } = new("--weight-decay") { Description = $"AdamW weight decay (default: 0.05 classify, 1e-4 linear-probe, {Segment.WeightDecay} segment)" };
    public Option<double?> DropPath { get; } = new("--drop-path") { Description = $"Stochastic depth of the last block (default {Classify.DropPath})" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed of the head, shuffling, augmentation, mixing and drop path (default 0)" };
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };
    public DeviceOption Device { get; } = new();
    public Option<bool> Resume { get; } = new("--resume")
    {
        Description = "Continue the run in --out from its latest checkpoint (one per epoch), exactly; give the same arguments. A finished run is reported and left as it is",
    };

    // classify and linear-probe only
    public Option<int?> WarmupEpochs { get; } = new("--warmup-epochs") { Description = "classify: linear warmup epochs (default: 5 but at most a fifth of the run; 0 for linear-probe)" };
    public Option<bool> NoMixup { get; } = new("--no-mixup") { Description = "classify: no Mixup/CutMix (label smoothing 0.1 stays)" };
    public Option<bool> NoRandAugment { get; } = new("--no-randaugment") { Description = "classify: no RandAugment (rand-m9-mstd0.5-inc1)" };
    public Option<double?> RandomErasing { get; } = new("--reprob") { Description = $"classify: random erasing probability (default {Classify.RandomErasing})" };
    public Option<int?> ImageSize { get; } = new("--img-size") { Description = "classify: train at this input size (positions resampled); default: the model's" };
    public Option<string?> GroundTruth { get; } = new("--ground-truth") { Description = "classify, imagenet with a flat val/: file of '<file name> <label>' lines" };

    // segment only
    public Option<int?> CropSize { get; } = new("--crop-size") { Description = $"segment: training crop and model input size, positions resampled (default {Segment.CropSize})" };
    public Option<long?> WarmupSteps { get; } = new("--warmup-steps") { Description = "segment: linear warmup steps (default: 1500, at most a tenth of the run)" };
    public Option<string?> Decoder { get; } = NullableChoice("--decoder",
        $"segment: upernet (BEiT's: four block outputs, feature pyramid, pyramid pooling, auxiliary FCN head) or setr-pup (final tokens, progressive upsampling); default {Segment.Decoder}",
        SegmentRequest.UperNetDecoder, SegmentRequest.SetrDecoder);
    public Option<int?> DecoderChannels { get; } = new("--decoder-channels") { Description = $"segment: decoder width (default: UperNet {Segment.UperNet.Channels}, SETR-PUP {Segment.Head.Channels})" };
    public Option<string?> EvalMode { get; } = EvalModes.Option();

    private IEnumerable<Option> ClassifyOnly => [WarmupEpochs, NoMixup, NoRandAugment, RandomErasing, ImageSize, GroundTruth];
    private IEnumerable<Option> SegmentOnly => [CropSize, WarmupSteps, Decoder, DecoderChannels, EvalMode];

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Task, Model, Output }) command.Options.Add(option);
        Data.AddTo(command);
        foreach (var option in new Option[] { Epochs, Batch, LearningRate, MinLearningRate, LayerDecay, WeightDecay, DropPath, Seed, Workers, Device.Option, Resume })
            command.Options.Add(option);
        foreach (var option in ClassifyOnly.Concat(SegmentOnly)) command.Options.Add(option);
    }

    public bool IsSegmentation(ParseResult parsed) => parsed.GetRequiredValue(Task) == Segmenter.Task;

    public FinetuneRequest Classification(ParseResult parsed)
    {
        RefuseOptionsOfTheOtherTask(parsed, SegmentOnly);
        var request = new FinetuneRequest
        {
            Task = parsed.GetRequiredValue(Task), Model = parsed.GetRequiredValue(Model), Data = parsed.GetRequiredValue(Data.Data),
            OutputDirectory = parsed.GetRequiredValue(Output),
        };
        return request with
        {
            Layout = Data.LayoutOrDefault(parsed) ?? request.Layout, GroundTruth = parsed.GetValue(GroundTruth) ?? request.GroundTruth,
            Epochs = parsed.GetValue(Epochs) ?? request.Epochs, BatchSize = parsed.GetValue(Batch) ?? request.BatchSize,
            LearningRate = parsed.GetValue(LearningRate) ?? request.LearningRate, MinLearningRate = parsed.GetValue(MinLearningRate) ?? request.MinLearningRate,
            WarmupEpochs = parsed.GetValue(WarmupEpochs) ?? request.WarmupEpochs, LayerDecay = parsed.GetValue(LayerDecay) ?? request.LayerDecay,
            WeightDecay = parsed.GetValue(WeightDecay) ?? request.WeightDecay, DropPath = parsed.GetValue(DropPath) ?? request.DropPath,
            Seed = parsed.GetValue(Seed) ?? request.Seed, DecodeWorkers = parsed.GetValue(Workers) ?? request.DecodeWorkers,
            ImageSize = parsed.GetValue(ImageSize) ?? request.ImageSize, RandomErasing = parsed.GetValue(RandomErasing) ?? request.RandomErasing,
            Mixup = !parsed.GetValue(NoMixup) && request.Mixup, RandAugment = parsed.GetValue(NoRandAugment) ? null : request.RandAugment,
            Resume = parsed.GetValue(Resume) || request.Resume,
        };
    }

    public SegmentRequest Segmentation(ParseResult parsed)
    {
        RefuseOptionsOfTheOtherTask(parsed, ClassifyOnly);
        var request = new SegmentRequest { Model = parsed.GetRequiredValue(Model), Data = parsed.GetRequiredValue(Data.Data), OutputDirectory = parsed.GetRequiredValue(Output) };
        request = request with
        {
            Layout = Data.LayoutOrDefault(parsed) ?? request.Layout, Epochs = parsed.GetValue(Epochs) ?? request.Epochs, BatchSize = parsed.GetValue(Batch) ?? request.BatchSize,
            CropSize = parsed.GetValue(CropSize) ?? request.CropSize, LearningRate = parsed.GetValue(LearningRate) ?? request.LearningRate,
            MinLearningRate = parsed.GetValue(MinLearningRate) ?? request.MinLearningRate, WarmupSteps = parsed.GetValue(WarmupSteps) ?? request.WarmupSteps,
            LayerDecay = parsed.GetValue(LayerDecay) ?? request.LayerDecay, WeightDecay = parsed.GetValue(WeightDecay) ?? request.WeightDecay,
            DropPath = parsed.GetValue(DropPath) ?? request.DropPath, Seed = parsed.GetValue(Seed) ?? request.Seed,
            DecodeWorkers = parsed.GetValue(Workers) ?? request.DecodeWorkers, Resume = parsed.GetValue(Resume) || request.Resume,
            Decoder = parsed.GetValue(Decoder) ?? request.Decoder, EvalMode = EvalModes.Of(parsed, EvalMode) ?? request.EvalMode,
        };
        if (parsed.GetValue(DecoderChannels) is int width)
            request = request with { Head = request.Head with { Channels = width }, UperNet = request.UperNet with { Channels = width } };
        return request;
    }

    private void RefuseOptionsOfTheOtherTask(ParseResult parsed, IEnumerable<Option> options)
    {
        var given = options.Where(o => parsed.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();
        if (given.Count > 0)
            throw new MimFlow.Cli.UsageException($"{string.Join(", ", given)} do{(given.Count == 1 ? "es" : "")} not apply to --task {parsed.GetRequiredValue(Task)}");
    }

    internal static Option<string> Choice(string name, string description, params string[] values)
    {
        var option = new Option<string>(name) { Description = description, Required = true };
        option.AcceptOnlyFromAmong(values);
        return option;
    }

    internal static Option<string?> NullableChoice(string name, string description, params string[] values)
    {
        var option = new Option<string?>(name) { Description = description };
        option.AcceptOnlyFromAmong(values);
        return option;
    }
}

/// <summary>The segmentation evaluation mode option, shared by finetune and eval.</summary>
internal static class EvalModes
{
    public static Option<string?> Option() => FinetuneOptions.NullableChoice("--eval-mode",
        "segment: slide (mmseg's keep-ratio rescale and sliding window; every pixel; the default) or centre (the centre crop only)", "slide", "centre");

    public static SegmentationEvalMode? Of(ParseResult parsed, Option<string?> option) => parsed.GetValue(option) switch
    {
        null => null,
        "centre" => SegmentationEvalMode.CentreCrop,
        _ => SegmentationEvalMode.Slide,
    };
}

/// <summary><c>mimflow finetune</c> (full fine-tuning, a linear probe, or ADE20K segmentation) and <c>mimflow eval</c> (top-1 / top-5 of a classifier, mIoU of a segmenter).</summary>
internal static class FinetuneCommand
{
    public static Command Create(CliContext context)
    {
        var options = new FinetuneOptions();
        var command = new Command("finetune", "Fine-tune a (pretrained) ViT: image classification with BEiT's recipe or a linear probe (top-1/top-5 on val/ each epoch), or ADE20K segmentation with UperNet (mIoU each epoch)");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            if (options.IsSegmentation(parsed))
            {
                var segment = options.Segmentation(parsed);
                segment.Validate();
                return await DataParallelLaunch.RunTrainingAsync(parsed, options.Device.Resolve(parsed),
                    (collective, device) => Segmenter.RunAsync(segment with { Device = device }, null, cancellationToken, collective),
                    async (collective, device) =>
                    {
                        var r = await RunAsync<SegmentationMetrics>(context, Segmenter.Task, progress => Segmenter.RunAsync(segment with { Device = device }, progress, cancellationToken, collective), e => [new ProgressFigure("val_miou", e.MeanIou, "0.0000"), new ProgressFigure("val_pixel_accuracy", e.PixelAccuracy, "0.0000", Shown: false)]);
                        Finish(context, Segmenter.Task, segment.OutputDirectory, r, r.Final is { } final
                            ? ($"; val mIoU {final.MeanIou.ToString("P2", CultureInfo.InvariantCulture)}, pixel accuracy {final.PixelAccuracy.ToString("P2", CultureInfo.InvariantCulture)} on {final.Images} images",
                               $", val mIoU {final.MeanIou:P1} on {final.Images} images")
                            : ("", ""));
                    });
            }
            var request = options.Classification(parsed);
            request.Validate();
            return await DataParallelLaunch.RunTrainingAsync(parsed, options.Device.Resolve(parsed),
                (collective, device) => Finetuner.RunAsync(request with { Device = device }, null, cancellationToken, collective),
                async (collective, device) =>
                {
                    var result = await RunAsync<EvaluationResult>(context, request.Task, progress => Finetuner.RunAsync(request with { Device = device }, progress, cancellationToken, collective), e => [new ProgressFigure("val_top1", e.Top1, "0.0000"), new ProgressFigure("val_top5", e.Top5, "0.0000", Shown: false)]);
                    Finish(context, request.Task, request.OutputDirectory, result, result.Final is { } top
                        ? ($"; val top-1 {top.Top1:P2}, top-5 {top.Top5:P2} on {top.Images} images (best top-1 {result.Evaluations.Max(e => e.Result.Top1):P2})",
                           $", val top-1 {top.Top1:P1} on {top.Images} images")
                        : ("", ""));
                });
        });
        return command;
    }

    /// <summary>A supervised run with a progress bar that shows the step, the loss and the last evaluation.</summary>
    private static Task<SupervisedResult<T>> RunAsync<T>(CliContext context, string task, Func<IProgress<SupervisedProgress<T>>, Task<SupervisedResult<T>>> run, Func<T, ProgressFigure[]> describe)
        where T : class
    {
        ProgressFigure[] lastEval = [];
        return CliProgress.RunAsync(context, task, "steps", report => run(new ImmediateProgress<SupervisedProgress<T>>(p =>
        {
            if (p.Evaluation is { } e) lastEval = describe(e);
            report(ProgressReport.FromStep(p.Step, p.TotalSteps, p.Figures, [new ProgressFigure("epoch", p.Epoch + 1, "0"), .. lastEval]));
        })));
    }

    /// <summary>The closing line of a fine-tuning run (or of a resumed run that was already complete) and its pipeline summary.</summary>
    private static void Finish<T>(CliContext context, string task, string outputDirectory, SupervisedResult<T> r, (string Line, string Summary) evaluation) where T : class
    {
        context.Report($"{r.Steps} steps, loss {r.FirstLoss:F3} → {r.LastLoss:F3}{evaluation.Summary}");
        if (r.WasComplete)
            context.Console.MarkupLineInterpolated($"{task}: the run in {outputDirectory} is complete ({r.Steps} steps), nothing to train{evaluation.Line}; checkpoint {r.Checkpoint}");
        else
            context.Console.MarkupLineInterpolated($"{task}: {r.Steps} steps, loss {r.FirstLoss:F4} → {r.LastLoss:F4}, {r.ImagesPerSecond:F1} img/s, {r.SkippedSteps} skipped{evaluation.Line}; checkpoint {r.Checkpoint}");
    }

    public static Command CreateEval(CliContext context)
    {
        var options = new EvalOptions();
        var command = new Command("eval", "Evaluate a classifier (top-1, top-5, per-class accuracy) or a segmenter (mIoU, pixel accuracy, per-class IoU) on a labelled split");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var index = options.Data.Open(parsed);
            string splitName = options.Data.SplitOf(parsed) == DatasetSplit.Validation ? "val" : "train";
            if (options.IsSegmentation(parsed))
            {
                var segmentOptions = options.Segmentation(parsed);
                segmentOptions.Validate();
                var metrics = await CliProgress.RunAsync(context, "eval", "images", report => Segmenter.EvaluateAsync(parsed.GetRequiredValue(options.Model), index,
                    segmentOptions with { Device = options.Device.Resolve(parsed) }, cancellationToken, new ImmediateProgress<int>(done => report(new ProgressReport(done, index.Count)))));
                var iou = new Table().AddColumns("class", "name", "pixels", "IoU");
                foreach (var row in metrics.PerClass.Where(c => !double.IsNaN(c.Iou)))
                    iou.AddRow(row.Class.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Name), row.TruthPixels.ToString(CultureInfo.InvariantCulture),
                        row.Iou.ToString("P1", CultureInfo.InvariantCulture));
                context.Console.Write(iou);
                context.Console.MarkupLineInterpolated(
                    $"mIoU {metrics.MeanIou.ToString("P2", CultureInfo.InvariantCulture)}, pixel accuracy {metrics.PixelAccuracy.ToString("P2", CultureInfo.InvariantCulture)}, loss {metrics.Loss:F4} on {metrics.Images} images ({splitName}){(metrics.Quarantined > 0 ? $", {metrics.Quarantined} quarantined" : "")}");
                WriteResult(context, parsed.GetValue(options.Output), () => Segmenter.EvaluationJson([new EpochEvaluation<SegmentationMetrics>(0, 0, metrics)]));
                return 0;
            }
            var classifyOptions = options.Classification(parsed);
            classifyOptions.Validate();
            var result = await CliProgress.RunAsync(context, "eval", "images", report => Evaluator.EvaluateAsync(parsed.GetRequiredValue(options.Model), index,
                classifyOptions with { Device = options.Device.Resolve(parsed) }, cancellationToken, new ImmediateProgress<int>(done => report(new ProgressReport(done, index.Count)))));
            var table = new Table().AddColumns("class", "name", "images", "top-1");
            foreach (var row in result.PerClass)
                table.AddRow(row.Class.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Name), row.Images.ToString(CultureInfo.InvariantCulture),
                    row.Images == 0 ? "–" : row.Top1.ToString("P1", CultureInfo.InvariantCulture));
            context.Console.Write(table);
            context.Console.MarkupLineInterpolated(
                $"top-1 {result.Top1.ToString("P2", CultureInfo.InvariantCulture)}, top-5 {result.Top5.ToString("P2", CultureInfo.InvariantCulture)}, loss {result.Loss:F4} on {result.Images} images ({splitName}){(result.Quarantined > 0 ? $", {result.Quarantined} quarantined" : "")}");
            WriteResult(context, parsed.GetValue(options.Output), () => Evaluator.ResultJson(result));
            return 0;
        });
        return command;
    }

    private static void WriteResult(CliContext context, string? path, Func<string> json)
    {
        if (path is null) return;
        AtomicFile.WriteAllText(path, json());
        context.Console.MarkupLineInterpolated($"wrote {path}");
    }
}

/// <summary>The options of <c>mimflow eval</c>; only what the user typed is applied onto the evaluation records' defaults.</summary>
internal sealed class EvalOptions
{
    private static readonly EvaluateOptions Classify = new();
    private static readonly SegmentEvaluateOptions Segment = new();

    public Option<string> Task { get; } = FinetuneOptions.Choice("--task", "classify: top-1 / top-5 accuracy and per-class top-1; segment: mIoU, pixel accuracy and per-class IoU",
        FinetuneRequest.Classify, Segmenter.Task);
    public Option<string> Model { get; } = new("--model") { Description = "classify: a ViT model directory with a classification head (a fine-tuning run folder or checkpoint backbone/); segment: a segmentation checkpoint or run folder", Required = true };
    public DataOptions Data { get; } = new(defaultSplit: "val", layouts: ["imagenet", "ade20k", "wds", "hf-parquet"],
        dataDescription: "Labelled dataset: a root folder; wds and hf-parquet also a shard file or a brace pattern");
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per batch (default {Classify.BatchSize} classify, {Segment.BatchSize} segment: windows per forward)" };
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };
    public DeviceOption Device { get; } = new();
    public Option<int?> ImageSize { get; } = new("--img-size") { Description = "classify: evaluate at this input size (positions resampled); default: the model's" };
    public Option<string?> Output { get; } = new("--out") { Description = "Also write the result (with the per-class table) as JSON to this file" };
    public Option<string?> EvalMode { get; } = EvalModes.Option();

    public void AddTo(Command command)
    {
        command.Options.Add(Task);
        command.Options.Add(Model);
        Data.AddTo(command);
        foreach (var option in new Option[] { Batch, Workers, Device.Option, ImageSize, Output, EvalMode }) command.Options.Add(option);
    }

    public bool IsSegmentation(ParseResult parsed) => parsed.GetRequiredValue(Task) == Segmenter.Task;

    public EvaluateOptions Classification(ParseResult parsed)
    {
        if (!DatasetLayouts.CanClassify(Data.LayoutOf(parsed)))
            throw new ArgumentException("classification reads labelled data (--layout imagenet, wds or hf-parquet)");
        return Classify with
        {
            BatchSize = parsed.GetValue(Batch) ?? Classify.BatchSize, DecodeWorkers = parsed.GetValue(Workers) ?? Classify.DecodeWorkers,
            ImageSize = parsed.GetValue(ImageSize) ?? Classify.ImageSize,
        };
    }

    public SegmentEvaluateOptions Segmentation(ParseResult parsed)
    {
        if (!DatasetLayouts.CanSegment(Data.LayoutOf(parsed)))
            throw new ArgumentException("segmentation reads images with label maps (--layout ade20k, wds or hf-parquet)");
        return Segment with
        {
            BatchSize = parsed.GetValue(Batch) ?? Segment.BatchSize, DecodeWorkers = parsed.GetValue(Workers) ?? Segment.DecodeWorkers,
            Mode = EvalModes.Of(parsed, EvalMode) ?? Segment.Mode,
        };
    }
}
