using System.CommandLine;
using MimFlow.Data.Augment;
using MimFlow.Data.Checks;
using MimFlow.Data.Packing;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Previews;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow datasets synth|check|preview|pack</c>: the embedded default datasets, a full decode check, a
/// picture of one training batch as the model will see it, and a folder layout packed into WebDataset tars or Hugging
/// Face Parquet.</summary>
internal static class DatasetsCommand
{
    public static Command Create(CliContext context)
    {
        var datasets = new Command("datasets", "Dataset tools");
        datasets.Subcommands.Add(CreateSynth(context));
        datasets.Subcommands.Add(CreateCheck(context));
        datasets.Subcommands.Add(CreatePreview(context));
        datasets.Subcommands.Add(CreatePack(context));
        return datasets;
    }

    private static Command CreateCheck(CliContext context)
    {
        var data = new Option<string>("--data") { Description = "Folder to check (every JPEG/PNG below it), or with --layout a dataset in that layout", Required = true };
        var layout = new Option<string?>("--layout") { Description = $"Check a dataset's samples instead of a folder's files: {DataOptions.LayoutHelp}" };
        layout.AcceptOnlyFromAmong([.. DatasetLayouts.Names]);
        var split = new Option<string>("--split") { Description = "With --layout: train or val", DefaultValueFactory = _ => "train" };
        split.AcceptOnlyFromAmong("train", "val");
        var maxLabel = new Option<int>("--max-label") { Description = "Largest value a PNG label map may hold", DefaultValueFactory = _ => MimFlow.Data.Sources.Layouts.Ade20kLayout.ClassCount };
        var workers = new Option<int>("--workers") { Description = "With --layout: samples decoded in parallel", DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("check", "Decode every image and label map to the last pixel (a folder's files, or with --layout a dataset's samples: tar members, Parquet rows); fails naming each broken one and why");
        foreach (var option in new Option[] { data, layout, split, maxLabel, workers }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string root = parsed.GetRequiredValue(data);
            DecodeCheckResult result;
            if (parsed.GetValue(layout) is { } name)
            {
                var index = DatasetSource.Open(root, DatasetLayouts.Parse(name), parsed.GetValue(split) == "val" ? DatasetSplit.Validation : DatasetSplit.Train);
                result = await DatasetCheck.RunAsync(index, parsed.GetValue(maxLabel), parsed.GetValue(workers), cancellationToken);
            }
            else
            {
                if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"{root}: no such folder");
                result = DecodeCheck.Run(root, parsed.GetValue(maxLabel), cancellationToken);
            }
            foreach (var failure in result.Failures) context.Error.WriteLine($"mimflow: {failure.Path}: {failure.Reason}");
            string did = $"{result.Images} images and {result.LabelMaps} label maps decoded; labels within 0..{result.MaxLabel}; {result.Failures.Count} failed";
            context.Console.WriteLine($"{root}: {did} ({result.Elapsed.TotalSeconds:F1} s)");
            context.Report(did);
            return result.Failures.Count == 0 ? 0 : MimFlowCli.Failure;
        });
        return command;
    }

    private static Command CreatePack(CliContext context)
    {
        var from = new Option<string>("--from") { Description = "Dataset root in a folder layout", Required = true };
        var layout = new Option<string>("--layout") { Description = "Layout of --from: imagenet or ade20k", Required = true };
        layout.AcceptOnlyFromAmong("imagenet", "ade20k");
        var format = new Option<string>("--format") { Description = "wds (OUT/train/*.tar, OUT/val/*.tar, OUT/classes.json) or hf-parquet (OUT/data/train-00000-of-0000N.parquet, validation-…)", Required = true };
        format.AcceptOnlyFromAmong("wds", "hf-parquet");
        var output = new Option<string>("--out") { Description = "Output folder (read back with --layout wds|hf-parquet --data OUT)", Required = true };
        var shardSize = new Option<double?>("--shard-mb") { Description = "Target shard size in MB (default 256); a shard is cut after the sample that reaches it" };
        var split = new Option<string>("--split") { Description = "train, val or all (all: val too when the layout has it)", DefaultValueFactory = _ => "all" };
        split.AcceptOnlyFromAmong("train", "val", "all");
        var groundTruth = new Option<string?>("--ground-truth") { Description = "imagenet with a flat val/: file of '<file name> <label>' lines" };
        var force = new Option<bool>("--force") { Description = "Replace the shards of an earlier pack of the same split (and its classes.json); nothing else is touched" };
        var command = new Command("pack", "Pack a folder layout into WebDataset tars or Hugging Face Parquet: same samples, same order, same bytes, shards cut near --shard-mb, written atomically");
        foreach (var option in new Option[] { from, layout, format, output, shardSize, split, groundTruth, force }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = new PackRequest
            {
                From = parsed.GetRequiredValue(from), Layout = DatasetLayouts.Parse(parsed.GetRequiredValue(layout)),
                Format = parsed.GetRequiredValue(format) == "wds" ? PackFormat.Wds : PackFormat.HfParquet, OutputDirectory = parsed.GetRequiredValue(output),
                Split = parsed.GetValue(split) switch { "train" => DatasetSplit.Train, "val" => DatasetSplit.Validation, _ => null },
                GroundTruth = parsed.GetValue(groundTruth), Force = parsed.GetValue(force),
            };
            if (parsed.GetValue(shardSize) is double megabytes)
            {
                if (!(megabytes > 0)) throw new ArgumentException($"--shard-mb must be positive (got {megabytes})");
                request = request with { ShardBytes = Math.Max(1, (long)(megabytes * 1024 * 1024)) };
            }
            var result = await CliProgress.RunAsync(context.Console, "pack", 1, task => DatasetPacker.PackAsync(request, new Progress<PackProgress>(p =>
            {
                task.MaxValue = Math.Max(1, p.Total);
                task.Value = Math.Min(task.MaxValue, p.Done);
                task.Description = $"pack {p.Split} {p.Done:N0}/{p.Total:N0}";
            }), cancellationToken));
            string formatName = request.Format == PackFormat.Wds ? "wds" : "hf-parquet";
            foreach (var packed in result.Splits)
            {
                context.Console.MarkupLineInterpolated(
                    $"{packed.Split}: {packed.Samples:N0} samples in {packed.Files.Count} {formatName} shard(s), {packed.Bytes / 1048576.0:F1} MB in [bold]{Path.GetDirectoryName(packed.Files.FirstOrDefault() ?? result.OutputDirectory)}[/]");
                foreach (string old in packed.Replaced) context.Console.MarkupLineInterpolated($"  removed the earlier shard {old}");
            }
            context.Report(string.Join(", ", result.Splits.Select(p => $"{p.Split} {p.Samples} samples in {p.Files.Count} shards")) + $", {result.Classes.Count} classes");
            return 0;
        });
        return command;
    }

    private static Command CreatePreview(CliContext context)
    {
        var data = new DataOptions();
        var output = new Option<string>("--out") { Description = "PNG to write", Required = true };
        var batch = new Option<int>("--batch") { Description = "Samples in the picture", DefaultValueFactory = _ => 16 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the augmentation and mask draws", DefaultValueFactory = _ => 0 };
        var command = new Command("preview", "Draw the first batch of the training recipe to a PNG: pretraining views with BEiT blockwise masks; data with label maps (ade20k, or wds/hf-parquet with them): segmentation crops with their label maps");
        data.AddTo(command);
        command.Options.Add(output);
        command.Options.Add(batch);
        command.Options.Add(seed);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var index = data.Open(parsed);
            string path = parsed.GetRequiredValue(output);
            string did = index.HasAnnotations
                ? await PreviewSegmentation(index, path, parsed.GetValue(batch), parsed.GetValue(seed), cancellationToken)
                : await PreviewMasked(index, path, parsed.GetValue(batch), parsed.GetValue(seed), cancellationToken);
            context.Console.WriteLine($"{did}: {path}");
            context.Report(did);
            return 0;
        });
        return command;
    }

    private static async Task<string> PreviewMasked(SampleIndex index, string path, int batchSize, ulong seed, CancellationToken cancellationToken)
    {
        var loader = new DataflowLoader(index, new PretrainRecipe(),
            new LoaderOptions { BatchSize = batchSize, Seed = seed, Format = PixelFormat.UInt8, Masks = new BlockwiseMaskGenerator(14, 14, 75) });
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var rows = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), batch.Views[0].Width, (byte[]?)batch.Mask(r).ToArray()))
                    .ToList();
                MaskPreview.WriteMaskedImages(rows, path);
                double masked = Enumerable.Range(0, batch.Count).Average(r => batch.Mask(r).ToArray().Count(b => b == 1));
                return $"{batch.Count} pretraining views {batch.Views[0].Width}×{batch.Views[0].Height} with blockwise masks: {masked:F1} of 196 patches masked on average";
            }
        throw new InvalidDataException($"{index.Root}: no decodable training image to preview");
    }

    private static async Task<string> PreviewSegmentation(SampleIndex index, string path, int batchSize, ulong seed, CancellationToken cancellationToken)
    {
        var loader = new DataflowLoader(index, new SegmentationRecipe(CropSize: 256, LongScale: 1024, ShortScale: 256),
            new LoaderOptions { BatchSize = batchSize, Seed = seed, Format = PixelFormat.UInt8 });
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var samples = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), batch.Views[0].Width, batch.LabelMap(r).ToArray()))
                    .ToList();
                MaskPreview.WriteSegmentation(samples, path);
                double ignored = samples.Average(s => s.Item3.Count(v => v == SegmentationRecipe.Ignore) / (double)s.Item3.Length);
                return $"{batch.Count} ADE20K crops {batch.Views[0].Width}×{batch.Views[0].Height} with label maps (reduced labels, {ignored:P0} ignored incl. padding)";
            }
        throw new InvalidDataException($"{index.Root}: no decodable training image to preview");
    }

    private static Command CreateSynth(CliContext context)
    {
        var kind = new Option<string>("--kind") { Description = "Layout to write: imagenet or ade20k", Required = true };
        kind.AcceptOnlyFromAmong("imagenet", "ade20k");
        var output = new Option<string>("--out") { Description = "Output folder (refused if not empty, unless --force)", Required = true };
        var images = new Option<int>("--images") { Description = "Number of images over both splits", Required = true };
        var classes = new Option<int?>("--classes") { Description = "imagenet: number of classes (default 10); ade20k: labels 1..K used (default 150)" };
        var seed = new Option<ulong>("--seed") { Description = "Seed: the same seed gives byte-identical files", DefaultValueFactory = _ => 0 };
        var minSide = new Option<int>("--min-size") { Description = "Smallest image side in pixels", DefaultValueFactory = _ => 200 };
        var maxSide = new Option<int>("--max-size") { Description = "Largest image side in pixels", DefaultValueFactory = _ => 800 };
        var validation = new Option<double>("--val-fraction") { Description = "Share of images in the validation split", DefaultValueFactory = _ => 0.2 };
        var quality = new Option<int>("--quality") { Description = "JPEG quality", DefaultValueFactory = _ => 90 };
        var force = new Option<bool>("--force") { Description = "Replace an earlier generation's files in a non-empty folder" };

        var command = new Command("synth", "Generate a synthetic dataset in the ImageNet or ADE20K layout, deterministic by seed");
        foreach (var option in new Option[] { kind, output, images, classes, seed, minSide, maxSide, validation, quality, force })
            command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var options = new SynthesisOptions
            {
                Kind = parsed.GetRequiredValue(kind) == "imagenet" ? SyntheticKind.ImageNet : SyntheticKind.Ade20k,
                OutputDirectory = parsed.GetRequiredValue(output),
                Images = parsed.GetValue(images),
                Classes = parsed.GetValue(classes),
                Seed = parsed.GetValue(seed),
                MinSide = parsed.GetValue(minSide),
                MaxSide = parsed.GetValue(maxSide),
                ValidationFraction = parsed.GetValue(validation),
                JpegQuality = parsed.GetValue(quality),
                Force = parsed.GetValue(force),
            };
            var result = await Synthesize(context.Console, options, cancellationToken);
            context.Report($"{result.TrainImages} train + {result.ValidationImages} val images, {result.Classes.Count} classes, {result.Bytes / 1e6:F1} MB");
            context.Console.MarkupLineInterpolated(
                $"wrote {result.TrainImages} training + {result.ValidationImages} validation images ({result.Bytes / 1e6:F1} MB, {result.Classes.Count} classes) to [bold]{result.Root}[/] in {result.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    /// <summary>Runs a generation with a progress bar (images done, images/s).</summary>
    public static Task<SynthesisResult> Synthesize(IAnsiConsole console, SynthesisOptions options, CancellationToken cancellationToken) =>
        CliProgress.RunAsync(console, $"synth {options.Kind.ToString().ToLowerInvariant()}", options.Images, task => SyntheticDatasets.WriteAsync(
            options, new Progress<SynthesisProgress>(p => task.Value = Math.Max(task.Value, p.Done)), cancellationToken));
}
