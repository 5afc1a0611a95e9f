using System.CommandLine;
using MimFlow.Precompute.Shards;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow shards verify|inspect|merge</c>: check, summarise and join pre-tokenized shard sets.</summary>
internal static class ShardsCommand
{
    public static Command Create(CliContext context)
    {
        var shards = new Command("shards", "Pre-tokenized Parquet shard sets: verify, inspect, merge");
        shards.Subcommands.Add(CreateVerify(context));
        return shards;
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
            context.Console.MarkupLineInterpolated($"[green]ok[/]: {manifest.Shards.Count} shards, {report.RowsChecked:N0} rows checked against {ShardManifest.FileName} (checksums, schema, codes, features)");
            return 0;
        });
        return command;
    }
}
