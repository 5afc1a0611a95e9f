using System.CommandLine;
using MimFlow.Shards;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow shards verify|inspect|merge</c>: check, summarise and join pre-tokenized shard sets.</summary>
internal static class ShardsCommand
{
    public static Command Create(CliContext context)
    {
        return new Command("shards", "Pre-tokenized Parquet shard sets: verify, inspect, merge")
        {
            CreateVerify(context),
            CreateInspect(context),
            CreateMerge(context),
        };
    }

    private static Command CreateInspect(CliContext context)
    {
        var directory = new Argument<string>("DIR") { Description = "Shard folder (with manifest.json)" };
        var pictures = new Option<string?>("--png") { Description = "Folder for codebook-usage.png and samples.png (default: DIR/inspect)" };
        var samples = new Option<int?>("--samples") { Description = $"Rows shown in samples.png (default {ShardInspector.DefaultSamples})" };
        var command = new Command("inspect", "Summarise a shard set: sizes per column, codebook usage (share used, entropy, histogram PNG), a PNG of samples with their crop and codes");
        command.Arguments.Add(directory);
        command.Options.Add(pictures);
        command.Options.Add(samples);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string folder = parsed.GetRequiredValue(directory);
            var inspection = await ShardInspector.InspectAsync(folder, parsed.GetValue(pictures), parsed.GetValue(samples) ?? ShardInspector.DefaultSamples, cancellationToken);
            var manifest = inspection.Manifest;
            var summary = new Table().Title($"{folder}").AddColumns("", "");
            void Row(string name, string value) => summary.AddRow(new Text(name), new Text(value));
            Row("rows", $"{manifest.Rows:N0} ({manifest.Configuration.Views} views × {manifest.SampleCount - manifest.Quarantined:N0} images; {manifest.Quarantined} quarantined)");
            Row("shards", $"{manifest.Shards.Count} files, {manifest.Shards.Sum(s => s.Bytes) / 1048576.0:F2} MB");
            Row("tokenizer", manifest.Configuration.Tokenizer is { } t ? $"{t.Architecture} (weights {t.WeightsSha256[..12]}…)" : "-");
            Row("teacher", manifest.Configuration.Teacher is { } te ? $"{te.Architecture} (weights {te.WeightsSha256[..12]}…)" : "-");
            if (inspection.Codebook is { } usage)
                Row("codebook", $"{usage.Used:N0} of {usage.CodebookSize:N0} codes used ({usage.UsedShare:P1}); entropy {usage.Entropy:F2} bits, perplexity {usage.Perplexity:F0}");
            context.Console.Write(summary);
            var sizes = new Table().Title("stored bytes per column (zstd)").AddColumns("column", "MB", "bytes per row");
            foreach (var column in inspection.Columns)
                sizes.AddRow(new Text(column.Column), new Text($"{column.Bytes / 1048576.0:F3}"), new Text($"{column.BytesPerRow:F0}"));
            context.Console.Write(sizes);
            foreach (string picture in inspection.Pictures) context.Console.MarkupLineInterpolated($"wrote {picture}");
            return 0;
        });
        return command;
    }

    private static Command CreateMerge(CliContext context)
    {
        var parts = new Argument<string[]>("PARTS") { Description = "The part folders of a --shard i/n run", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out") { Description = "Folder for the joined set", Required = true };
        var command = new Command("merge", "Join the parts of a --shard i/n run into one verified set with one manifest");
        command.Arguments.Add(parts);
        command.Options.Add(output);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string folder = parsed.GetRequiredValue(output);
            var merged = await ShardMerger.MergeAsync(parsed.GetRequiredValue(parts), folder, cancellationToken);
            context.Console.MarkupLineInterpolated($"merged {parsed.GetRequiredValue(parts).Length} parts into {folder}: {merged.Shards.Count} shards, {merged.Rows:N0} rows, verified");
            return 0;
        });
        return command;
    }

    private static Command CreateVerify(CliContext context)
    {
        var directory = new Argument<string>("DIR") { Description = "Shard folder (with manifest.json)" };
        var command = new Command("verify", "Check every shard against the manifest: checksums, schema, row counts, code range, feature shapes; exit 1 on any mismatch");
        command.Arguments.Add(directory);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var report = await ShardVerifier.VerifyAsync(parsed.GetRequiredValue(directory), cancellationToken);
            if (!report.Ok)
            {
                foreach (string problem in report.Problems.Skip(1).Take(20)) context.Error.WriteLine($"mimflow: {problem}");
                throw new InvalidDataException(report.Problems.Count == 1 ? report.Problems[0] : $"{report.Problems[0]} (and {report.Problems.Count - 1} more problems above)");
            }
            var manifest = report.Manifest!;
            context.Report($"{manifest.Shards.Count} shards, {report.RowsChecked:N0} rows: checksums, schema, codes, features");
            context.Console.MarkupLineInterpolated($"[green]ok[/]: {manifest.Shards.Count} shards, {report.RowsChecked:N0} rows checked against {ShardManifest.FileName} (checksums, schema, codes, features)");
            return 0;
        });
        return command;
    }
}
