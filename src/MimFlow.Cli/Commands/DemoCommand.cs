using System.CommandLine;
using System.Diagnostics;
using MimFlow.Cli.Demo;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow demo</c>: every stage that exists, on generated data, with a summary.</summary>
internal static class DemoCommand
{
    public static Command Create(CliContext context)
    {
        var output = new Option<string>("--out") { Description = "Folder for the demo's outputs", DefaultValueFactory = _ => Path.Combine("out", "demo") };
        var seed = new Option<ulong>("--seed") { Description = "Seed for the generated data", DefaultValueFactory = _ => 0 };
        var command = new Command("demo", "Run every stage on a generated dataset and print what each did (counts, times, outputs)");
        command.Options.Add(output);
        command.Options.Add(seed);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var watch = Stopwatch.StartNew();
            var run = new DemoRun(context, parsed.GetRequiredValue(output), parsed.GetValue(seed), MimFlowCli.BackendOptions(parsed));
            var reports = await run.RunAsync(cancellationToken);
            DemoRun.Render(context.Console, reports, watch.Elapsed);
            return 0;
        });
        return command;
    }
}
