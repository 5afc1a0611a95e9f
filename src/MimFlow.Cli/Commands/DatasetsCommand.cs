using MimFlow.Core.Status;
using MimFlow.Cli.Reporting;
using System.CommandLine;
using MimFlow.Data.Checks;
using MimFlow.Data.Packing;
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
        return new Command("datasets", "Dataset tools")
        {
            CreateSynth(context),
            CreateCheck(context),
            CreatePreview(context),
            CreatePack(context),
        };
    }

    private static Command CreateCheck(CliContext context)
    {
        var options = new DatasetCheckOptions();
        var command = new Command("check", "Decode every image and label map to the last pixel (a folder's files, or with --layout a dataset's samples: tar members, Parquet rows); fails naming each broken one and why");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            var result = await DatasetCheck.RunAsync(request, cancellationToken);
            foreach (var failure in result.Failures) context.Error.WriteLine($"mimflow: {failure.Path}: {failure.Reason}");
            string did = $"{result.Images} images and {result.LabelMaps} label maps decoded; labels within 0..{result.MaxLabel}; {result.Failures.Count} failed";
            context.Console.WriteLine($"{request.Data}: {did} ({result.Elapsed.TotalSeconds:F1} s)");
            context.Report(did);
            return result.Failures.Count == 0 ? 0 : MimFlowCli.Failure;
        });
        return command;
    }

    private static Command CreatePack(CliContext context)
    {
        var options = new PackOptions();
        var command = new Command("pack", "Pack a folder layout into WebDataset tars or Hugging Face Parquet: same samples, same order, same bytes, shards cut near --shard-mb, written atomically");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            var result = await CliProgress.RunAsync(context, "pack", "samples", report => DatasetPacker.PackAsync(request,
                new ImmediateProgress<PackProgress>(p => report(new ProgressReport(p.Done, p.Total, new ProgressFigure($"split_{p.Split}", p.Done, "0", Shown: false)))),
                cancellationToken));
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
        var options = new PreviewOptions();
        var command = new Command("preview", "Draw the first batch of the training recipe to a PNG: pretraining views with BEiT blockwise masks; data with label maps (ade20k, or wds/hf-parquet with them): segmentation crops with their label maps");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            string did = await BatchPreview.WriteAsync(request, cancellationToken);
            context.Console.WriteLine($"{did}: {request.OutputPath}");
            context.Report(did);
            return 0;
        });
        return command;
    }

    private static Command CreateSynth(CliContext context)
    {
        var options = new SynthOptions();
        var command = new Command("synth", "Generate a synthetic dataset in the ImageNet or ADE20K layout, deterministic by seed");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            var result = await Synthesize(context, request, cancellationToken);
            context.Report($"{result.TrainImages} train + {result.ValidationImages} val images, {result.Classes.Count} classes, {result.Bytes / 1e6:F1} MB");
            context.Console.MarkupLineInterpolated(
                $"wrote {result.TrainImages} training + {result.ValidationImages} validation images ({result.Bytes / 1e6:F1} MB, {result.Classes.Count} classes) to [bold]{result.Root}[/] in {result.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    /// <summary>Runs a generation with a progress bar (images done, images/s).</summary>
    public static Task<SynthesisResult> Synthesize(CliContext context, SynthesisOptions options, CancellationToken cancellationToken) =>
        CliProgress.RunAsync(context, "synth", "images", report => SyntheticDatasets.WriteAsync(
            options, new ImmediateProgress<SynthesisProgress>(p => report(new ProgressReport(p.Done, p.Total))), cancellationToken));
}

/// <summary>The options of <c>mimflow datasets synth</c>; only what the user typed is applied onto <see cref="SynthesisOptions"/>' defaults.</summary>
internal sealed class SynthOptions
{
    private static readonly SynthesisOptions Defaults = new() { Kind = SyntheticKind.ImageNet, OutputDirectory = "" };

    public Option<string> Kind { get; } = FinetuneOptions.Choice("--kind", "Layout to write: imagenet or ade20k", "imagenet", "ade20k");
    public Option<string> Output { get; } = new("--out") { Description = "Output folder (refused if not empty, unless --force)", Required = true };
    public Option<int?> Images { get; } = new("--images") { Description = $"Number of images over both splits (default {Defaults.Images})" };
    public Option<int?> Classes { get; } = new("--classes") { Description = "imagenet: number of classes (default 10); ade20k: labels 1..K used (default 150)" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed: the same seed gives byte-identical files (default 0)" };
    public Option<int?> MinSide { get; } = new("--min-size") { Description = $"Smallest image side in pixels (default {Defaults.MinSide})" };
    public Option<int?> MaxSide { get; } = new("--max-size") { Description = $"Largest image side in pixels (default {Defaults.MaxSide})" };
    public Option<double?> ValidationFraction { get; } = new("--val-fraction") { Description = $"Share of images in the validation split (default {Defaults.ValidationFraction})" };
    public Option<int?> Quality { get; } = new("--quality") { Description = $"JPEG quality (default {Defaults.JpegQuality})" };
    public Option<bool> Force { get; } = new("--force") { Description = "Replace an earlier generation's files in a non-empty folder (nothing else is touched)" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Kind, Output, Images, Classes, Seed, MinSide, MaxSide, ValidationFraction, Quality, Force }) command.Options.Add(option);
    }

    public SynthesisOptions Request(ParseResult parsed)
    {
        var request = new SynthesisOptions
        {
            Kind = parsed.GetRequiredValue(Kind) == "imagenet" ? SyntheticKind.ImageNet : SyntheticKind.Ade20k, OutputDirectory = parsed.GetRequiredValue(Output),
        };
        return request with
        {
            Images = parsed.GetValue(Images) ?? request.Images, Classes = parsed.GetValue(Classes) ?? request.Classes, Seed = parsed.GetValue(Seed) ?? request.Seed,
            MinSide = parsed.GetValue(MinSide) ?? request.MinSide, MaxSide = parsed.GetValue(MaxSide) ?? request.MaxSide,
            ValidationFraction = parsed.GetValue(ValidationFraction) ?? request.ValidationFraction, JpegQuality = parsed.GetValue(Quality) ?? request.JpegQuality,
            Force = parsed.GetValue(Force) || request.Force,
        };
    }
}

/// <summary>The options of <c>mimflow datasets check</c>.</summary>
internal sealed class DatasetCheckOptions
{
    private static readonly DatasetCheckRequest Defaults = new("");

    public Option<string> Data { get; } = new("--data") { Description = "Folder to check (every JPEG/PNG below it), or with --layout a dataset in that layout", Required = true };
    public Option<string?> Layout { get; } = FinetuneOptions.NullableChoice("--layout", $"Check a dataset's samples instead of a folder's files: {DataOptions.LayoutHelp}", [.. DatasetLayouts.Names]);
    public Option<string?> Split { get; } = FinetuneOptions.NullableChoice("--split", "With --layout: train (the default) or val", "train", "val");
    public Option<int?> MaxLabel { get; } = new("--max-label") { Description = $"Largest value a PNG label map may hold (default {Defaults.MaxLabel})" };
    public Option<int?> Workers { get; } = new("--workers") { Description = "With --layout: samples decoded in parallel (default: the processor count)" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Data, Layout, Split, MaxLabel, Workers }) command.Options.Add(option);
    }

    public DatasetCheckRequest Request(ParseResult parsed)
    {
        var request = new DatasetCheckRequest(parsed.GetRequiredValue(Data));
        return request with
        {
            Layout = parsed.GetValue(Layout) is { } layout ? DatasetLayouts.Parse(layout) : request.Layout,
            Split = parsed.GetValue(Split) switch { "val" => DatasetSplit.Validation, "train" => DatasetSplit.Train, _ => request.Split },
            MaxLabel = parsed.GetValue(MaxLabel) ?? request.MaxLabel, Workers = parsed.GetValue(Workers) ?? request.Workers,
        };
    }
}

/// <summary>The options of <c>mimflow datasets preview</c>; only what the user typed is applied onto <see cref="PreviewRequest"/>'s defaults.</summary>
internal sealed class PreviewOptions
{
    public DataOptions Data { get; } = new();
    public Option<string> Output { get; } = new("--out") { Description = "PNG to write", Required = true };
    public Option<int?> Batch { get; } = new("--batch") { Description = "Samples in the picture (default 16)" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed of the augmentation and mask draws (default 0)" };

    public void AddTo(Command command)
    {
        Data.AddTo(command);
        foreach (var option in new Option[] { Output, Batch, Seed }) command.Options.Add(option);
    }

    /// <summary>Opens the dataset (its listing is part of the request).</summary>
    public PreviewRequest Request(ParseResult parsed)
    {
        var request = new PreviewRequest(Data.Open(parsed), parsed.GetRequiredValue(Output));
        return request with { BatchSize = parsed.GetValue(Batch) ?? request.BatchSize, Seed = parsed.GetValue(Seed) ?? request.Seed };
    }
}

/// <summary>The options of <c>mimflow datasets pack</c>; only what the user typed is applied onto <see cref="PackRequest"/>'s defaults.</summary>
internal sealed class PackOptions
{
    private static readonly PackRequest Defaults = new() { From = "", OutputDirectory = "" };

    public Option<string> From { get; } = new("--from") { Description = "Dataset root in a folder layout", Required = true };
    public Option<string> Layout { get; } = FinetuneOptions.Choice("--layout", "Layout of --from: imagenet or ade20k", "imagenet", "ade20k");
    public Option<string> Format { get; } = FinetuneOptions.Choice("--format", "wds (OUT/train/*.tar, OUT/val/*.tar, OUT/classes.json) or hf-parquet (OUT/data/train-00000-of-0000N.parquet, validation-…)", "wds", "hf-parquet");
    public Option<string> Output { get; } = new("--out") { Description = "Output folder (read back with --layout wds|hf-parquet --data OUT)", Required = true };
    public Option<double?> ShardSize { get; } = new("--shard-mb") { Description = $"Target shard size in MB (default {Defaults.ShardBytes >> 20}); a shard is cut after the sample that reaches it" };
    public Option<string?> Split { get; } = FinetuneOptions.NullableChoice("--split", "train, val or all (the default; all: val too when the layout has it)", "train", "val", "all");
    public Option<string?> GroundTruth { get; } = new("--ground-truth") { Description = "imagenet with a flat val/: file of '<file name> <label>' lines" };
    public Option<bool> Force { get; } = new("--force") { Description = "Replace the shards of an earlier pack of the same split (and its classes.json); nothing else is touched" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { From, Layout, Format, Output, ShardSize, Split, GroundTruth, Force }) command.Options.Add(option);
    }

    public PackRequest Request(ParseResult parsed)
    {
        var request = new PackRequest
        {
            From = parsed.GetRequiredValue(From), Layout = DatasetLayouts.Parse(parsed.GetRequiredValue(Layout)),
            Format = parsed.GetRequiredValue(Format) == "wds" ? PackFormat.Wds : PackFormat.HfParquet, OutputDirectory = parsed.GetRequiredValue(Output),
        };
        return request with
        {
            Split = parsed.GetValue(Split) switch { "train" => DatasetSplit.Train, "val" => DatasetSplit.Validation, "all" => null, _ => request.Split },
            GroundTruth = parsed.GetValue(GroundTruth) ?? request.GroundTruth, Force = parsed.GetValue(Force) || request.Force,
            ShardBytes = parsed.GetValue(ShardSize) is double megabytes
                ? megabytes > 0 ? Math.Max(1, (long)(megabytes * 1024 * 1024)) : throw new UsageException($"--shard-mb must be positive (got {megabytes})")
                : request.ShardBytes,
        };
    }
}
