using System.CommandLine;
using MimFlow.Data.Augment;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Previews;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Checks;
using MimFlow.Datasets.Synthetic;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow datasets synth|check|preview</c>: the embedded default datasets, a full decode check, and a
/// picture of one training batch as the model will see it.</summary>
internal static class DatasetsCommand
{
    public static Command Create(CliContext context)
    {
        var datasets = new Command("datasets", "Dataset tools");
        datasets.Subcommands.Add(CreateSynth(context));
        datasets.Subcommands.Add(CreateCheck(context));
        datasets.Subcommands.Add(CreatePreview(context));
        return datasets;
    }

    private static Command CreateCheck(CliContext context)
    {
        var data = new Option<string>("--data") { Description = "Folder to check (every JPEG/PNG below it)", Required = true };
        var maxLabel = new Option<int>("--max-label") { Description = "Largest value a PNG label map may hold", DefaultValueFactory = _ => MimFlow.Datasets.Layouts.Ade20kLayout.ClassCount };
        var command = new Command("check", "Decode every image and label map below a folder to the last pixel; fails naming each broken file and why");
        command.Options.Add(data);
        command.Options.Add(maxLabel);
        command.SetAction((parsed, cancellationToken) =>
        {
            string root = parsed.GetRequiredValue(data);
            if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"{root}: no such folder");
            var result = DecodeCheck.Run(root, parsed.GetValue(maxLabel), cancellationToken);
            foreach (var failure in result.Failures) context.Error.WriteLine($"mimflow: {failure.Path}: {failure.Reason}");
            string did = $"{result.Images} images and {result.LabelMaps} label maps decoded; labels within 0..{result.MaxLabel}; {result.Failures.Count} failed";
            context.Console.WriteLine($"{root}: {did} ({result.Elapsed.TotalSeconds:F1} s)");
            context.Report(did);
            return Task.FromResult(result.Failures.Count == 0 ? 0 : MimFlowCli.Failure);
        });
        return command;
    }

    private static Command CreatePreview(CliContext context)
    {
        var data = new DataOptions();
        var output = new Option<string>("--out") { Description = "PNG to write", Required = true };
        var batch = new Option<int>("--batch") { Description = "Samples in the picture", DefaultValueFactory = _ => 16 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the augmentation and mask draws", DefaultValueFactory = _ => 0 };
        var command = new Command("preview", "Draw the first batch of the training recipe to a PNG: imagenet/folder: pretraining views with BEiT blockwise masks; ade20k: segmentation crops with their label maps");
        data.AddTo(command);
        command.Options.Add(output);
        command.Options.Add(batch);
        command.Options.Add(seed);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var index = data.Open(parsed);
            string path = parsed.GetRequiredValue(output);
            string did = data.LayoutOf(parsed) == DatasetLayout.Ade20k
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
