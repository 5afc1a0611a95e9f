using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Data.Sources;
using MimFlow.Torch.Backend;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Segmentation;
using Spectre.Console;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow finetune</c> (full fine-tuning, a linear probe, or ADE20K segmentation) and <c>mimflow eval</c> (top-1 / top-5 of a classifier, mIoU of a segmenter).</summary>
internal static class FinetuneCommand
{
    public static Command Create(CliContext context)
    {
        var task = new Option<string>("--task") { Description = "classify (full fine-tuning), linear-probe (frozen backbone, only the head trains) or segment (ADE20K, SETR-PUP head)", Required = true };
        task.AcceptOnlyFromAmong(FinetuneRequest.Classify, FinetuneRequest.LinearProbe, Segmenter.Task);
        var model = new Option<string>("--model") { Description = "A ViT model directory (e.g. a pretraining checkpoint's backbone/) or an architecture for random init", Required = true };
        var data = LabelledData(null, "Labelled dataset: its train split to learn from, its val split to evaluate each epoch (a root folder; wds, hf-parquet: shards)");
        var output = new Option<string>("--out") { Description = "Run folder: metrics.jsonl, eval.json, checkpoints/ (one per epoch; backbone/ is the classifier)", Required = true };
        var epochs = new Option<int>("--epochs") { Description = "Epochs over train/ (BEiT-base: 100)", DefaultValueFactory = _ => 100 };
        var batch = new Option<int>("--batch") { Description = "Images per step (a last partial batch is dropped)", DefaultValueFactory = _ => 64 };
        var lr = new Option<double?>("--lr") { Description = "Peak learning rate (default: 4e-3·batch/1024 for classify, 1e-3·batch/256 for linear-probe)" };
        var minLr = new Option<double?>("--min-lr") { Description = "Learning rate at the end of the cosine (default: 1e-6 classify, 0 linear-probe)" };
        var warmup = new Option<int?>("--warmup-epochs") { Description = "Linear warmup epochs (default: 5, at most a fifth of the run, for classify; 0 for linear-probe)" };
        var layerDecay = new Option<double>("--layer-decay") { Description = "Layer-wise learning-rate decay for classify (BEiT: 0.65 base, 0.75 large; 1: off)", DefaultValueFactory = _ => 0.65 };
        var weightDecay = new Option<double?>("--weight-decay") { Description = "AdamW weight decay (default: 0.05 classify, 1e-4 linear-probe)" };
        var dropPath = new Option<double>("--drop-path") { Description = "Stochastic depth rate of the last block (classify)", DefaultValueFactory = _ => 0.1 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the head, shuffling, augmentation, mixing and drop path", DefaultValueFactory = _ => 0 };
        var noMixup = new Option<bool>("--no-mixup") { Description = "Train classify without Mixup/CutMix (label smoothing 0.1 stays)" };
        var noRandAugment = new Option<bool>("--no-randaugment") { Description = "Train classify without RandAugment (rand-m9-mstd0.5-inc1)" };
        var reprob = new Option<double>("--reprob") { Description = "Random erasing probability for classify", DefaultValueFactory = _ => 0.25 };
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var device = DeviceOption();
        var imageSize = new Option<int?>("--img-size") { Description = "Train at this input size (positions resampled); default: the model's" };
        var cropSize = new Option<int>("--crop-size") { Description = "segment: training crop and model input size (positions resampled)", DefaultValueFactory = _ => 512 };
        var warmupSteps = new Option<long?>("--warmup-steps") { Description = "segment: linear warmup steps (default: 1500, at most a tenth of the run)" };
        var resume = new Option<bool>("--resume")
        {
            Description = "Continue the run in --out from its latest checkpoint (one per epoch), exactly; give the same arguments. A finished run is reported and left as it is",
        };
        var command = new Command("finetune", "Fine-tune a (pretrained) ViT: image classification with BEiT's recipe or a linear probe (top-1/top-5 on val/ each epoch), or ADE20K segmentation (mIoU each epoch)");
        var decoder = new Option<string>("--decoder") { Description = "segment: upernet (BEiT's: four block outputs, feature pyramid, pyramid pooling, auxiliary FCN head) or setr-pup (final tokens, progressive upsampling)", DefaultValueFactory = _ => SegmentRequest.UperNetDecoder };
        decoder.AcceptOnlyFromAmong(SegmentRequest.UperNetDecoder, SegmentRequest.SetrDecoder);
        var decoderChannels = new Option<int?>("--decoder-channels") { Description = "segment: decoder width (default: UperNet 768, SETR-PUP 256)" };
        var evalMode = EvalModeOption();
        foreach (var option in new Option[] { task, model }) command.Options.Add(option);
        data.AddTo(command);
        foreach (var option in new Option[] { output, epochs, batch, lr, minLr, warmup, layerDecay, weightDecay, dropPath, seed, noMixup, noRandAugment, reprob, workers, device, imageSize, cropSize, warmupSteps, resume, decoder, decoderChannels, evalMode })
            command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            if (parsed.GetRequiredValue(task) == Segmenter.Task)
            {
                var segment = new SegmentRequest
                {
                    Model = parsed.GetRequiredValue(model), Data = parsed.GetRequiredValue(data.Data), Layout = data.LayoutOf(parsed),
                    OutputDirectory = parsed.GetRequiredValue(output), Epochs = parsed.GetValue(epochs), BatchSize = parsed.GetValue(batch),
                    CropSize = parsed.GetValue(cropSize), LearningRate = parsed.GetValue(lr), MinLearningRate = parsed.GetValue(minLr) ?? 0,
                    WarmupSteps = parsed.GetValue(warmupSteps), LayerDecay = parsed.GetValue(layerDecay), WeightDecay = parsed.GetValue(weightDecay) ?? 0.05,
                    DropPath = parsed.GetValue(dropPath), Seed = parsed.GetValue(seed), DecodeWorkers = parsed.GetValue(workers), Resume = parsed.GetValue(resume),
                    Decoder = parsed.GetRequiredValue(decoder), EvalMode = EvalMode(parsed, evalMode),
                };
                if (parsed.GetValue(decoderChannels) is int width)
                    segment = segment with { Head = segment.Head with { Channels = width }, UperNet = segment.UperNet with { Channels = width } };
                segment.Validate();
                return await SegmentAsync(context, segment with { Device = Device(parsed, device) }, cancellationToken);
            }
            var request = new FinetuneRequest
            {
                Task = parsed.GetRequiredValue(task), Model = parsed.GetRequiredValue(model), Data = parsed.GetRequiredValue(data.Data),
                GroundTruth = data.GroundTruthOf(parsed), OutputDirectory = parsed.GetRequiredValue(output), Epochs = parsed.GetValue(epochs),
                BatchSize = parsed.GetValue(batch), LearningRate = parsed.GetValue(lr), MinLearningRate = parsed.GetValue(minLr),
                WarmupEpochs = parsed.GetValue(warmup), LayerDecay = parsed.GetValue(layerDecay), WeightDecay = parsed.GetValue(weightDecay),
                DropPath = parsed.GetValue(dropPath), Seed = parsed.GetValue(seed), Mixup = !parsed.GetValue(noMixup), DecodeWorkers = parsed.GetValue(workers),
                ImageSize = parsed.GetValue(imageSize), RandAugment = parsed.GetValue(noRandAugment) ? null : new Data.Augment.RandAugment(),
                RandomErasing = parsed.GetValue(reprob), Layout = data.LayoutOf(parsed), Resume = parsed.GetValue(resume),
            };
            request.Validate();
            request = request with { Device = Device(parsed, device) };
            string lastEval = "";
            var r = await CliProgress.RunAsync(context.Console, request.Task, 1, bar => Finetuner.RunAsync(request, new Progress<FinetuneProgress>(p =>
            {
                bar.MaxValue = p.TotalSteps;
                bar.Value = p.Step + 1;
                if (p.Evaluation is { } e) lastEval = $" val top-1 {e.Top1:P1}";
                bar.Description = $"epoch {p.Epoch + 1} step {p.Step + 1}/{p.TotalSteps} loss {p.Loss:F3}{lastEval}";
            }), cancellationToken));
            string evaluation = r.Final is { } final
                ? $"; val top-1 {final.Top1:P2}, top-5 {final.Top5:P2} on {final.Images} images (best top-1 {r.Evaluations.Max(e => e.Result.Top1):P2})"
                : "";
            Finish(context, request.Task, request.OutputDirectory, r.WasComplete, r.Steps, r.FirstLoss, r.LastLoss, r.ImagesPerSecond, r.SkippedSteps, r.Checkpoint,
                evaluation, r.Final is { } top ? $", val top-1 {top.Top1:P1} on {top.Images} images" : "");
            return 0;
        });
        return command;
    }

    /// <summary>Runs <c>--task segment</c> with a progress bar and prints the final mIoU.</summary>
    private static async Task<int> SegmentAsync(CliContext context, SegmentRequest request, CancellationToken cancellationToken)
    {
        string lastEval = "";
        var r = await CliProgress.RunAsync(context.Console, Segmenter.Task, 1, bar => Segmenter.RunAsync(request, new Progress<SegmentProgress>(p =>
        {
            bar.MaxValue = p.TotalSteps;
            bar.Value = p.Step + 1;
            if (p.Evaluation is { } e) lastEval = $" val mIoU {e.MeanIou:P1}";
            bar.Description = $"epoch {p.Epoch + 1} step {p.Step + 1}/{p.TotalSteps} loss {p.Loss:F3}{lastEval}";
        }), cancellationToken));
        string evaluation = r.Final is { } final
            ? $"; val mIoU {final.MeanIou.ToString("P2", CultureInfo.InvariantCulture)}, pixel accuracy {final.PixelAccuracy.ToString("P2", CultureInfo.InvariantCulture)} on {final.Images} images"
            : "";
        Finish(context, Segmenter.Task, request.OutputDirectory, r.WasComplete, r.Steps, r.FirstLoss, r.LastLoss, r.ImagesPerSecond, r.SkippedSteps, r.Checkpoint,
            evaluation, r.Final is { } miou ? $", val mIoU {miou.MeanIou:P1} on {miou.Images} images" : "");
        return 0;
    }

    /// <summary>The closing line of a fine-tuning run (or of a resumed run that was already complete) and its pipeline summary.</summary>
    private static void Finish(CliContext context, string task, string outputDirectory, bool wasComplete, long steps, double firstLoss, double lastLoss,
        double imagesPerSecond, long skipped, string checkpoint, string evaluation, string summaryEvaluation)
    {
        context.Report($"{steps} steps, loss {firstLoss:F3} → {lastLoss:F3}{summaryEvaluation}");
        if (wasComplete)
            context.Console.MarkupLineInterpolated($"{task}: the run in {outputDirectory} is complete ({steps} steps), nothing to train{evaluation}; checkpoint {checkpoint}");
        else
            context.Console.MarkupLineInterpolated($"{task}: {steps} steps, loss {firstLoss:F4} → {lastLoss:F4}, {imagesPerSecond:F1} img/s, {skipped} skipped{evaluation}; checkpoint {checkpoint}");
    }

    public static Command CreateEval(CliContext context)
    {
        var task = new Option<string>("--task") { Description = "classify: top-1 / top-5 accuracy and per-class top-1; segment: mIoU, pixel accuracy and per-class IoU", Required = true };
        task.AcceptOnlyFromAmong(FinetuneRequest.Classify, Segmenter.Task);
        var model = new Option<string>("--model") { Description = "classify: a ViT model directory with a classification head (a fine-tuning checkpoint's backbone/); segment: a segmentation checkpoint or run folder", Required = true };
        var data = LabelledData("val", "Labelled dataset: a root folder; wds and hf-parquet also a shard file or a brace pattern");
        var batch = new Option<int>("--batch") { Description = "Images per batch", DefaultValueFactory = _ => 64 };
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var device = DeviceOption();
        var imageSize = new Option<int?>("--img-size") { Description = "Evaluate at this input size (positions resampled); default: the model's" };
        var output = new Option<string?>("--out") { Description = "Also write the result (with the per-class table) as JSON to this file" };
        var command = new Command("eval", "Evaluate a classifier (top-1, top-5, per-class accuracy) or a segmenter (mIoU, pixel accuracy, per-class IoU) on a labelled split");
        var evalMode = EvalModeOption();
        foreach (var option in new Option[] { task, model }) command.Options.Add(option);
        data.AddTo(command);
        foreach (var option in new Option[] { batch, workers, device, imageSize, output, evalMode })
            command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var options = new EvaluateOptions
            {
                BatchSize = parsed.GetValue(batch), DecodeWorkers = parsed.GetValue(workers), ImageSize = parsed.GetValue(imageSize),
            };
            options.Validate();
            options = options with { Device = Device(parsed, device) };
            string splitName = data.SplitOf(parsed) == DatasetSplit.Validation ? "val" : "train";
            if (parsed.GetRequiredValue(task) == Segmenter.Task)
            {
                if (!DatasetLayouts.CanSegment(data.LayoutOf(parsed)))
                    throw new ArgumentException("segmentation reads images with label maps (--layout ade20k, wds or hf-parquet)");
                var segments = data.Open(parsed);
                var metrics = await Segmenter.EvaluateAsync(parsed.GetRequiredValue(model), segments,
                    new SegmentEvaluateOptions { BatchSize = options.BatchSize, DecodeWorkers = options.DecodeWorkers, Device = options.Device, Mode = EvalMode(parsed, evalMode) }, cancellationToken);
                var iou = new Table().AddColumns("class", "name", "pixels", "IoU");
                foreach (var row in metrics.PerClass.Where(c => !double.IsNaN(c.Iou)))
                    iou.AddRow(row.Class.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Name), row.TruthPixels.ToString(CultureInfo.InvariantCulture),
                        row.Iou.ToString("P1", CultureInfo.InvariantCulture));
                context.Console.Write(iou);
                context.Console.MarkupLineInterpolated(
                    $"mIoU {metrics.MeanIou.ToString("P2", CultureInfo.InvariantCulture)}, pixel accuracy {metrics.PixelAccuracy.ToString("P2", CultureInfo.InvariantCulture)}, loss {metrics.Loss:F4} on {metrics.Images} images ({splitName}){(metrics.Quarantined > 0 ? $", {metrics.Quarantined} quarantined" : "")}");
                if (parsed.GetValue(output) is { } file)
                {
                    AtomicFile.WriteAllText(file, Segmenter.EvaluationJson([new SegmentEpochEvaluation(0, 0, metrics)]));
                    context.Console.MarkupLineInterpolated($"wrote {file}");
                }
                return 0;
            }
            if (!DatasetLayouts.CanClassify(data.LayoutOf(parsed)))
                throw new ArgumentException("classification reads labelled data (--layout imagenet, wds or hf-parquet)");
            var index = data.Open(parsed);
            var result = await Evaluator.EvaluateAsync(parsed.GetRequiredValue(model), index, options, cancellationToken);
            var table = new Table().AddColumns("class", "name", "images", "top-1");
            foreach (var row in result.PerClass)
                table.AddRow(row.Class.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Name), row.Images.ToString(CultureInfo.InvariantCulture),
                    row.Images == 0 ? "–" : row.Top1.ToString("P1", CultureInfo.InvariantCulture));
            context.Console.Write(table);
            context.Console.MarkupLineInterpolated(
                $"top-1 {result.Top1.ToString("P2", CultureInfo.InvariantCulture)}, top-5 {result.Top5.ToString("P2", CultureInfo.InvariantCulture)}, loss {result.Loss:F4} on {result.Images} images ({splitName}){(result.Quarantined > 0 ? $", {result.Quarantined} quarantined" : "")}");
            if (parsed.GetValue(output) is { } path)
            {
                AtomicFile.WriteAllText(path, JsonSerializer.Serialize(result, new JsonSerializerOptions
                {
                    WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
                }));
                context.Console.MarkupLineInterpolated($"wrote {path}");
            }
            return 0;
        });
        return command;
    }

    private static Option<string> EvalModeOption()
    {
        var option = new Option<string>("--eval-mode") { Description = "segment: slide (mmseg's keep-ratio rescale and sliding window; every pixel) or centre (the centre crop only)", DefaultValueFactory = _ => "slide" };
        option.AcceptOnlyFromAmong("slide", "centre");
        return option;
    }

    private static SegmentationEvalMode EvalMode(ParseResult parsed, Option<string> option) =>
        parsed.GetRequiredValue(option) == "centre" ? SegmentationEvalMode.CentreCrop : SegmentationEvalMode.Slide;

    /// <summary>finetune and eval read labelled data: every layout but the unlabelled folder one.</summary>
    private static DataOptions LabelledData(string? defaultSplit, string description) =>
        new(defaultSplit: defaultSplit, dataDescription: description, layouts: ["imagenet", "ade20k", "wds", "hf-parquet"]);

    private static Option<string> DeviceOption()
    {
        var option = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        option.AcceptOnlyFromAmong("cpu", "cuda");
        return option;
    }

    /// <summary>Loads the backend and resolves --device (cuda needs the CUDA libtorch).</summary>
    private static torch.Device Device(ParseResult parsed, Option<string> device)
    {
        var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
        bool cuda = parsed.GetValue(device) == "cuda";
        if (cuda && backend.DefaultDevice.type != DeviceType.CUDA) throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch)");
        return cuda ? backend.DefaultDevice : torch.CPU;
    }
}
