using System.Diagnostics;
using MimFlow.Cli.Commands;
using MimFlow.Data.Augment;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Previews;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Checks;
using MimFlow.Datasets.Synthetic;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Precompute.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;
using MimFlow.Torch.Backend;
using MimFlow.Torch.Diagnostics;
using Spectre.Console;

namespace MimFlow.Cli.Demo;

/// <summary>One line of the demo's summary: what a stage did, how long it took, where its output is.</summary>
public sealed record StageReport(string Stage, string Did, TimeSpan Elapsed, string Output);

/// <summary>
/// Runs every stage that exists so far on generated data, small enough for 2 CPU cores: the torch backend check,
/// the two synthetic datasets, a full decode of what was written, a scan (read + decode + augment with quarantine)
/// of each, one masked pretraining batch and one segmentation batch drawn to PNGs, a seeded VQ-KD tokenizer, the
/// pre-tokenization of the training images into Parquet shards and their verification, BEiT pretraining on them, and
/// classification fine-tuning from that checkpoint next to the same fine-tuning from random init.
/// </summary>
internal sealed class DemoRun(CliContext context, string outputDirectory, ulong seed, TorchBackendOptions backendOptions)
{
    public const int ImageNetImages = 60;
    public const int ImageNetClasses = 6;
    public const int Ade20kImages = 20;
    public const int PretrainSteps = 30;
    public const int FinetuneEpochs = 6;

    /// <summary>The demo's ViT shape: real architectures at 64 px so pretraining runs in seconds on 2 cores.</summary>
    private static readonly VitConfig DemoVit = new() { ImgSize = 64, PatchSize = 8, EmbedDim = 96, Depth = 4, NumHeads = 3 };

    public async Task<IReadOnlyList<StageReport>> RunAsync(CancellationToken cancellationToken)
    {
        string root = Path.GetFullPath(outputDirectory);
        Directory.CreateDirectory(root);
        var reports = new List<StageReport>();

        reports.Add(Timed("backend", () =>
        {
            var backend = TorchBackend.EnsureLoaded(backendOptions);
            var test = BackendSelfTest.Run(backend.DefaultDevice, (long)seed);
            if (!test.Passed) throw new InvalidDataException($"the backend self-test failed on {test.Device}: {test}");
            return ($"matmul + backward checked on {test.Device}; libstdc++ fix {(backend.Fix.Applied ? "applied" : "not needed")}", backend.LibTorchSharpPath);
        }));

        string imagenet = Path.Combine(root, "imagenet");
        var imagenetResult = await DatasetsCommand.Synthesize(context.Console, new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = imagenet, Images = ImageNetImages, Classes = ImageNetClasses,
            Seed = seed, MinSide = 160, MaxSide = 320, Force = true,
        }, cancellationToken);
        reports.Add(new StageReport("synth imagenet",
            $"{imagenetResult.TrainImages} train + {imagenetResult.ValidationImages} val JPEGs, {imagenetResult.Classes.Count} classes, {imagenetResult.Bytes / 1e6:F1} MB",
            imagenetResult.Elapsed, imagenet));

        string ade20k = Path.Combine(root, "ade20k");
        var adeResult = await DatasetsCommand.Synthesize(context.Console, new SynthesisOptions
        {
            Kind = SyntheticKind.Ade20k, OutputDirectory = ade20k, Images = Ade20kImages, Seed = seed, MinSide = 192, MaxSide = 384, Force = true,
        }, cancellationToken);
        reports.Add(new StageReport("synth ade20k",
            $"{adeResult.TrainImages} train + {adeResult.ValidationImages} val scenes with label maps, {adeResult.Bytes / 1e6:F1} MB",
            adeResult.Elapsed, ade20k));

        reports.Add(Timed("decode check", () =>
        {
            // Only the generated datasets: the demo folder also holds its own PNG outputs from earlier runs.
            var checks = new[] { imagenet, ade20k }.Select(folder => DecodeCheck.Run(folder, cancellationToken: cancellationToken)).ToList();
            var failures = checks.SelectMany(c => c.Failures).ToList();
            if (failures.Count > 0)
                throw new InvalidDataException($"{failures.Count} file(s) failed to decode, first: {failures[0].Path}: {failures[0].Reason}");
            return ($"{checks.Sum(c => c.Images)} images and {checks.Sum(c => c.LabelMaps)} label maps decoded; labels within 0..{checks.Max(c => c.MaxLabel)}", root);
        }));

        foreach (var (name, folder, layout) in new[] { ("imagenet", imagenet, DatasetLayout.ImageNet), ("ade20k", ade20k, DatasetLayout.Ade20k) })
        {
            var index = DatasetSource.Open(folder, layout);
            string scanFolder = Path.Combine(root, "scan", name);
            var scan = await ScanCommand.Run(context.Console, index, scanFolder, DatasetSplit.Train, new LoaderOptions { Seed = seed }, cancellationToken);
            if (scan.Quarantined > 0)
                throw new InvalidDataException($"the generated {name} set had {scan.Quarantined} quarantined file(s): see {scan.QuarantineFile}");
            reports.Add(new StageReport($"scan {name}", $"{scan.Ok} ok, {scan.Quarantined} quarantined, {scan.ImagesPerSecond:F0} img/s", TimeSpan.FromSeconds(scan.Seconds), scanFolder));
        }

        var watch = Stopwatch.StartNew();
        string preview = Path.Combine(root, "masked-batch.png");
        var trainIndex = DatasetSource.Open(imagenet, DatasetLayout.ImageNet);
        var loader = new DataflowLoader(trainIndex, new PretrainRecipe(),
            new LoaderOptions { BatchSize = 16, Seed = seed, Format = PixelFormat.UInt8, Masks = new BlockwiseMaskGenerator(14, 14, 75) });
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
        {
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var rows = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), 224, (byte[]?)batch.Mask(r).ToArray()))
                    .ToList();
                MaskPreview.WriteMaskedImages(rows, preview);
                double masked = Enumerable.Range(0, batch.Count).Average(r => batch.Mask(r).ToArray().Count(b => b == 1));
                reports.Add(new StageReport("masked batch", $"{batch.Count} views 224×224 + 112×112 (dVAE), blockwise masks: {masked:F1} of 196 patches masked on average", watch.Elapsed, preview));
            }
            break;
        }

        watch.Restart();
        string segmentationPreview = Path.Combine(root, "segmentation-batch.png");
        var adeIndex = DatasetSource.Open(ade20k, DatasetLayout.Ade20k);
        var segmentation = new DataflowLoader(adeIndex, new SegmentationRecipe(CropSize: 256, LongScale: 1024, ShortScale: 256),
            new LoaderOptions { BatchSize = 4, Seed = seed, Format = PixelFormat.UInt8 });
        await foreach (var batch in segmentation.ReadEpochAsync(cancellationToken))
        {
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var samples = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), batch.Views[0].Width, batch.LabelMap(r).ToArray()))
                    .ToList();
                MaskPreview.WriteSegmentation(samples, segmentationPreview);
                double ignored = samples.Average(s => s.Item3.Count(v => v == SegmentationRecipe.Ignore) / (double)s.Item3.Length);
                reports.Add(new StageReport("segmentation batch",
                    $"{batch.Count} ADE20K crops 256×256 with label maps (reduced labels, {ignored:P0} ignored incl. padding)", watch.Elapsed, segmentationPreview));
            }
            break;
        }

        // Pre-tokenization and pretraining at demo scale (64 px, 8×8 patches) so both run in seconds on 2 cores:
        // a seeded VQ-KD tokenizes two views of every training image into shards, then a small BEiT pretrains on them.
        string tokenizer = Path.Combine(root, "models", "vqkd-demo");
        string student = Path.Combine(root, "models", "beit-demo");
        reports.Add(Timed("model init", () =>
        {
            var tokenizerSpec = new ModelSpec("vqkd-demo", Vqkd: VqKdConfig.ForEncoder(DemoVit with { Depth = 2 }));
            using var model = ModelCatalog.Create(tokenizerSpec, (long)seed);
            ModelDirectory.Save(tokenizer, tokenizerSpec, model);
            var studentSpec = new ModelSpec("beit-demo", Config: Architectures.Get("beit-tiny") with
            {
                ImgSize = DemoVit.ImgSize, PatchSize = DemoVit.PatchSize, EmbedDim = DemoVit.EmbedDim, Depth = DemoVit.Depth, NumHeads = DemoVit.NumHeads,
            });
            using var beit = ModelCatalog.Create(studentSpec, (long)seed);
            ModelDirectory.Save(student, studentSpec, beit);
            return ($"VQ-KD ({model.parameters().Sum(p => p.numel()):N0} parameters, 8192×32 codebook) and BEiT ({beit.parameters().Sum(p => p.numel()):N0}) at 64 px, 8×8 patches, seeded", Path.Combine(root, "models"));
        }));
        string shards = Path.Combine(root, "shards");
        if (Directory.Exists(shards)) Directory.Delete(shards, recursive: true);
        var tokenized = await TokenizeJob.RunAsync(new TokenizeRequest
        {
            DataRoot = imagenet, TokenizerDirectory = tokenizer, Views = 2, Seed = seed, OutputDirectory = shards,
            StoreImageMaxSide = 128, BatchSize = 16, TargetShardBytes = 256 << 10,
        }, cancellationToken: cancellationToken);
        var manifest = tokenized.Manifest;
        reports.Add(new StageReport("tokenize",
            $"{manifest.Rows} rows ({manifest.Configuration.Views} views × {manifest.SampleCount - manifest.Quarantined} images): {manifest.CodeLength} codes + JPEG each, {manifest.Shards.Count} Parquet shards, {tokenized.ImagesPerSecond:F0} img/s",
            TimeSpan.FromSeconds(tokenized.Seconds), shards));
        watch.Restart();
        var verified = await ShardVerifier.VerifyAsync(shards, cancellationToken);
        if (!verified.Ok) throw new InvalidDataException($"the demo's shards do not verify: {verified.Problems[0]}");
        reports.Add(new StageReport("shards verify", $"{verified.RowsChecked} rows: checksums, schema, code range", watch.Elapsed, Path.Combine(shards, ShardManifest.FileName)));

        string run = Path.Combine(root, "runs", "beit");
        if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
        watch.Restart();
        var pretrained = await Pretrainer.RunAsync(new PretrainRequest
        {
            Shards = shards, Objective = "beit", Model = student, OutputDirectory = run, Steps = PretrainSteps, BatchSize = 16, Seed = seed,
            CheckpointEvery = PretrainSteps, LearningRate = 1e-3, MinLearningRate = 1e-5, WarmupSteps = 3,
        }, cancellationToken: cancellationToken);
        RunPlots.Draw(run);
        var losses = MetricsLog.Read(run).Select(e => e["loss"]!.GetValue<double>()).ToList();
        reports.Add(new StageReport("pretrain beit",
            $"{PretrainSteps} steps × 16 images: loss {losses.Take(5).Average():F3} (first 5) → {losses.TakeLast(5).Average():F3} (last 5), {pretrained.ImagesPerSecond:F0} img/s, input-bound {pretrained.InputBoundShare:P0}",
            watch.Elapsed, run));

        // Fine-tuning at equal budget from the pretrained backbone and from the same architecture's random init.
        var top1 = new Dictionary<string, EvaluationResult>();
        watch.Restart();
        foreach (var (name, model) in new[] { ("pretrained", Path.Combine(pretrained.Checkpoint, "backbone")), ("random init", student) })
        {
            string folder = Path.Combine(root, "runs", name == "pretrained" ? "finetune-pretrained" : "finetune-random");
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            var result = await Finetuner.RunAsync(new FinetuneRequest
            {
                Task = FinetuneRequest.Classify, Model = model, Data = imagenet, OutputDirectory = folder, Epochs = FinetuneEpochs, BatchSize = 16, Seed = seed,
                LearningRate = 2e-3, RandAugment = null, RandomErasing = 0,
            }, cancellationToken: cancellationToken);
            top1[name] = result.Final!;
        }
        reports.Add(new StageReport("fine-tune",
            $"{FinetuneEpochs} epochs each, {top1["pretrained"].Images} val images: top-1 {top1["pretrained"].Top1:P1} from the BEiT checkpoint vs {top1["random init"].Top1:P1} from random init",
            watch.Elapsed, Path.Combine(root, "runs")));
        return reports;
    }

    private static StageReport Timed(string stage, Func<(string Did, string Output)> run)
    {
        var watch = Stopwatch.StartNew();
        var (did, output) = run();
        return new StageReport(stage, did, watch.Elapsed, output);
    }

    public static void Render(IAnsiConsole console, IReadOnlyList<StageReport> reports, TimeSpan total)
    {
        var table = new Table().Title("mimflow demo: stage summary")
            .AddColumn("stage").AddColumn("what it did").AddColumn(new TableColumn("time").RightAligned()).AddColumn("output");
        foreach (var report in reports)
            table.AddRow(Markup.Escape(report.Stage), Markup.Escape(report.Did), $"{report.Elapsed.TotalSeconds:F1} s", Markup.Escape(report.Output));
        console.Write(table);
        console.MarkupLineInterpolated($"demo finished in {total.TotalSeconds:F1} s");
    }
}
