using MimFlow.Core.Status;
using MimFlow.Cli.Reporting;
using System.CommandLine;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow scan</c>: read + decode + augment a whole dataset, quarantining bad inputs.</summary>
internal static class ScanCommand
{
    public static Command Create(CliContext context)
    {
        var options = new ScanOptions();
        var command = new Command("scan", "Read, decode and augment every input of a dataset without training; bad inputs are quarantined with a reason");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var index = options.Data.Open(parsed);
            var report = await Run(context, index, parsed.GetRequiredValue(options.Output), options.Data.SplitOf(parsed), options.Loader(parsed), cancellationToken);
            Render(context.Console, report);
            context.Report($"{report.Ok} ok, {report.Quarantined} quarantined, {report.ImagesPerSecond:F0} img/s");
            return 0;
        });
        return command;
    }

    public static Task<ScanReport> Run(CliContext context, SampleIndex index, string output, DatasetSplit split, LoaderOptions options, CancellationToken cancellationToken) =>
        CliProgress.RunAsync(context, "scan", "images", report => DatasetScan.RunAsync(index, output, split, options,
            new ImmediateProgress<ScanProgress>(p => report(new ProgressReport(p.Done, p.Total, new ProgressFigure("images_per_second", p.ImagesPerSecond, "0", Shown: false)))),
            cancellationToken));

    public static void Render(IAnsiConsole console, ScanReport report) =>
        console.MarkupLineInterpolated(
            $"scanned {report.Listed} inputs of {report.Root} ({report.Layout}, {report.Split}): [green]{report.Ok} ok[/], [yellow]{report.Quarantined} quarantined[/] in {report.Seconds:F1} s ({report.ImagesPerSecond:F0} img/s){(report.Quarantined > 0 ? $"; reasons in {report.QuarantineFile}" : "")}");
}

/// <summary>The options of <c>mimflow scan</c>; only what the user typed is applied onto <see cref="LoaderOptions"/>' defaults.</summary>
internal sealed class ScanOptions
{
    private static readonly LoaderOptions Defaults = new();

    public DataOptions Data { get; } = new();
    public Option<string> Output { get; } = new("--out") { Description = "Folder for scan.json, quarantine.jsonl and classes.json", Required = true };
    public Option<int?> Workers { get; } = new Option<int?>("--workers") { Description = "Decode workers (default: the processor count)" }.InRange(1, 1024);

    // Zero or a negative limit would quarantine every image and still exit 0; 2^40 pixels is past any decoder.
    public Option<long?> MaxPixels { get; } = new Option<long?>("--max-pixels")
    {
        Description = $"Refuse images above this many pixels, decompression bombs (default {Defaults.Limits.MaxPixels:N0})",
    }.InRange(1, 1L << 40);

    public void AddTo(Command command)
    {
        Data.AddTo(command);
        foreach (var option in new Option[] { Output, Workers, MaxPixels }) command.Options.Add(option);
    }

    public LoaderOptions Loader(ParseResult parsed) => Defaults with
    {
        DecodeWorkers = parsed.GetValue(Workers) ?? Defaults.DecodeWorkers,
        Limits = parsed.GetValue(MaxPixels) is long limit ? Defaults.Limits with { MaxPixels = limit } : Defaults.Limits,
    };
}
