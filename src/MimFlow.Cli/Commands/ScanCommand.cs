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
        var data = new DataOptions();
        var output = new Option<string>("--out") { Description = "Folder for scan.json, quarantine.jsonl and classes.json", Required = true };
        var defaults = new LoaderOptions();
        var workers = new Option<int?>("--workers") { Description = "Decode workers (default: the processor count)" }.InRange(1, 1024);
        // Zero or a negative limit would quarantine every image and still exit 0; 2^40 pixels is past any decoder.
        var maxPixels = new Option<long?>("--max-pixels") { Description = $"Refuse images above this many pixels, decompression bombs (default {defaults.Limits.MaxPixels:N0})" }
            .InRange(1, 1L << 40);
        var command = new Command("scan", "Read, decode and augment every input of a dataset without training; bad inputs are quarantined with a reason");
        data.AddTo(command);
        command.Options.Add(output);
        command.Options.Add(workers);
        command.Options.Add(maxPixels);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var index = data.Open(parsed);
            var options = defaults with
            {
                DecodeWorkers = parsed.GetValue(workers) ?? defaults.DecodeWorkers,
                Limits = parsed.GetValue(maxPixels) is long limit ? defaults.Limits with { MaxPixels = limit } : defaults.Limits,
            };
            var report = await Run(context, index, parsed.GetRequiredValue(output), data.SplitOf(parsed), options, cancellationToken);
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
