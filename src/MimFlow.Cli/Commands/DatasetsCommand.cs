using System.CommandLine;
using MimFlow.Datasets.Synthetic;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow datasets synth</c>: the embedded default datasets.</summary>
internal static class DatasetsCommand
{
    public static Command Create(CliContext context)
    {
        var datasets = new Command("datasets", "Dataset tools");
        datasets.Subcommands.Add(CreateSynth(context));
        return datasets;
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
