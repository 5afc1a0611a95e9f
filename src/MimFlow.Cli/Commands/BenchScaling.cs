using System.CommandLine;
using MimFlow.Core.IO;
using MimFlow.Benchmarks;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>bench train --world N</c>: the command line side (which options to pass on, how to start this program, the table).</summary>
internal static class BenchScaling
{
    public static async Task<int> RunAsync(CliContext context, ParseResult parsed, int ranks, int batch, string? jsonPath, CancellationToken cancellationToken)
    {
        if (batch % ranks != 0) throw new UsageException($"--batch {batch} must be a multiple of --world {ranks}: each rank steps on --batch/--world images");
        var result = await TrainScaling.RunAsync(new TrainScalingRequest(ranks, batch / ranks, SelfCommand(), PassedOptions(parsed)),
            context.Log, cancellationToken);
        var rows = result.Rows;
        var table = new Table().Title($"bench train --world {ranks}: {rows[0]["model"]}, {batch / ranks} images per rank, {rows[0]["device"]}, {Environment.ProcessorCount} cores")
            .AddColumns("ranks", "global batch", "img/s", "step ms", "all-reduce ms", "scaling efficiency");
        foreach (var row in rows)
            table.AddRow(row["world_size"]!.ToString(), row["global_batch"]!.ToString(), $"{row["images_per_second"]!.GetValue<double>():F1}",
                $"{row["step_ms"]!.GetValue<double>():F1}", $"{row["allreduce_ms"]!.GetValue<double>():F2}",
                row["world_size"]!.GetValue<int>() == 1 ? "1.00 (reference)" : $"{result.Efficiency:F2}");
        context.Console.Write(table);
        context.Report($"{ranks} ranks: {rows[1]["images_per_second"]!.GetValue<double>():F1} img/s vs {rows[0]["images_per_second"]!.GetValue<double>():F1} at 1 rank, " +
                       $"scaling efficiency {result.Efficiency:F2}, all-reduce {rows[1]["allreduce_ms"]!.GetValue<double>():F1} ms per step");
        if (jsonPath is not null) AtomicFile.WriteAllText(jsonPath, result.ToJson());
        return 0;
    }

    /// <summary>The options the user gave to bench train, minus those the scaling run sets per world size.</summary>
    private static List<string> PassedOptions(ParseResult parsed)
    {
        var args = new List<string>();
        foreach (var child in parsed.CommandResult.Children.OfType<System.CommandLine.Parsing.OptionResult>())
        {
            string name = child.Option.Name;
            if (name is "--world" or "--batch" or "--json" or "--peer" or "--python" || child.Implicit) continue;
            args.Add(name);
            args.AddRange(child.Tokens.Select(t => t.Value));
        }
        return args;
    }

    /// <summary>How to start this same program: the apphost, or dotnet with the CLI's assembly.</summary>
    private static IReadOnlyList<string> SelfCommand()
    {
        string host = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(host) == "dotnet" ? [host, typeof(BenchScaling).Assembly.Location] : [host];
    }
}
