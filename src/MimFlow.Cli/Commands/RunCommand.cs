using MimFlow.Cli.Reporting;
using System.CommandLine;
using System.Diagnostics;
using MimFlow.Cli.Pipelines;
using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.Execution;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow run PIPELINE.json</c>: a declared stage graph, each stage skipped, resumed or run.</summary>
internal static class RunCommand
{
    public static Command Create(CliContext context)
    {
        var pipeline = new Argument<string>("PIPELINE") { Description = "Pipeline file (pipelines/*.json; schema in pipelines/README.md)" };
        var output = new Option<string?>("--out") { Description = "Run folder for every stage's outputs and the stage records (default: out/<pipeline name>)" };
        var from = new Option<string?>("--from") { Description = "Run this stage and every stage that reads from it again; the others as usual" };
        var only = new Option<string?>("--only") { Description = "Run just this stage again (what it reads must be complete)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan (what runs, resumes or is skipped, and why) and the command lines; run nothing" };
        var variables = new Option<string[]>("--var") { Description = "NAME=VALUE for a variable the pipeline declares (repeatable)", AllowMultipleArgumentsPerToken = false };
        var command = new Command("run", "Run a declared pipeline: stages in dependency order; complete stages are skipped, unfinished ones resume");
        command.Arguments.Add(pipeline);
        foreach (var option in new Option[] { output, from, only, dryRun, variables }) command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var executor = Executor(context, parsed);
            var definition = PipelineFile.Load(parsed.GetRequiredValue(pipeline), executor, ParseVariables(parsed.GetValue(variables)));
            return await Run(context, executor, new RunRequest(definition, parsed.GetValue(output) ?? Path.Combine("out", definition.Name),
                parsed.GetValue(from), parsed.GetValue(only), parsed.GetValue(dryRun)), cancellationToken);
        });
        return command;
    }

    /// <summary><c>mimflow demo</c>: the embedded <c>pipelines/demo.json</c>, so it works from any folder.</summary>
    public static Command CreateDemo(CliContext context)
    {
        var output = new Option<string?>("--out") { Description = "Run folder for the demo's outputs (default: out/demo)" };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of the generated data, models and training (default: the pipeline's, 0)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan only" };
        var command = new Command("demo", "Run every stage on a generated dataset (the embedded pipelines/demo.json; same as mimflow run pipelines/demo.json)");
        command.Options.Add(output);
        command.Options.Add(seed);
        command.Options.Add(dryRun);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var executor = Executor(context, parsed);
            using var stream = typeof(RunCommand).Assembly.GetManifestResourceStream(DemoResource)
                ?? throw new InvalidOperationException($"the program was built without {DemoResource}");
            string json = await new StreamReader(stream).ReadToEndAsync(cancellationToken);
            var variables = parsed.GetValue(seed) is ulong chosen
                ? new Dictionary<string, string> { ["seed"] = chosen.ToString(System.Globalization.CultureInfo.InvariantCulture) }
                : new Dictionary<string, string>();
            var definition = PipelineFile.Parse(json, $"{DemoResource} (embedded)", executor, variables);
            return await Run(context, executor, new RunRequest(definition, parsed.GetValue(output) ?? Path.Combine("out", definition.Name), DryRun: parsed.GetValue(dryRun)), cancellationToken);
        });
        return command;
    }

    public const string DemoResource = "pipelines/demo.json";

    private static CliStageExecutor Executor(CliContext context, ParseResult parsed) =>
        new(context, MimFlowCli.LibTorchOf(parsed) is { } libtorch ? ["--libtorch", libtorch] : []);

    private static async Task<int> Run(CliContext context, CliStageExecutor executor, RunRequest request, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var console = context.Console;
        console.MarkupLineInterpolated($"[bold]{request.Pipeline.Name}[/]: {request.Pipeline.Stages.Count} stages from {request.Pipeline.Source} into {Path.GetFullPath(request.OutputDirectory)}");
        var result = await new PipelineRunner(executor, new Display(context)).RunAsync(request, cancellationToken);
        if (request.DryRun) RenderPlan(console, result);
        else Render(console, result, watch.Elapsed);
        if (result.Error is { } error)
        {
            context.Error.WriteLine($"mimflow: error: {error}");
            return MimFlowCli.Failure;
        }
        return 0;
    }

    private static void RenderPlan(IAnsiConsole console, PipelineRunResult result)
    {
        var table = new Table().Title("plan (dry run)").AddColumns("#", "stage", "action", "why", "command line");
        int n = 0;
        foreach (var stage in result.Stages)
            table.AddRow(new Text($"{++n}"), new Text(stage.Stage), new Text(Verb(stage.Action, dryRun: true)), new Text(stage.Reason), new Text(stage.CommandLine));
        console.Write(table);
    }

    private static void Render(IAnsiConsole console, PipelineRunResult result, TimeSpan total)
    {
        var table = new Table().Title("stage summary").AddColumn("stage").AddColumn("action").AddColumn("what it did")
            .AddColumn(new TableColumn("time").RightAligned()).AddColumn("output");
        foreach (var stage in result.Stages)
            table.AddRow(new Text(stage.Stage), new Text(stage.Stage == result.FailedStage ? "FAILED" : Verb(stage.Action, dryRun: false)),
                new Text(stage.Summary ?? (stage.Action == StageAction.Skip ? stage.Reason : "")),
                new Text(stage.Action == StageAction.Skip ? "-" : $"{stage.Elapsed.TotalSeconds:F1} s"), new Text(string.Join("\n", stage.Outputs)));
        console.Write(table);
        int ran = result.Stages.Count(s => s.Action != StageAction.Skip), skipped = result.Stages.Count - ran;
        console.MarkupLineInterpolated($"{(result.Succeeded ? "finished" : "stopped")} in {total.TotalSeconds:F1} s: {ran} stage(s) ran, {skipped} skipped as complete");
    }

    private static string Verb(StageAction action, bool dryRun) => action switch
    {
        StageAction.Skip => dryRun ? "skip" : "skipped",
        StageAction.Resume => dryRun ? "resume" : "resumed",
        _ => dryRun ? "run" : "ran",
    };

    private static Dictionary<string, string> ParseVariables(string[]? assignments)
    {
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string assignment in assignments ?? [])
        {
            int equals = assignment.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0) throw new ArgumentException($"--var takes NAME=VALUE (got '{assignment}')");
            variables[assignment[..equals]] = assignment[(equals + 1)..];
        }
        return variables;
    }

    /// <summary>
    /// A rule per stage as it starts, a line as it ends (skips included), so a long run shows where it is; in a log,
    /// time-stamped lines (JSON with --log-format json), and the stages done as Prometheus gauges.
    /// </summary>
    private sealed class Display(CliContext context) : IPipelineObserver
    {
        private int finished;
        private int count;

        public void Starting(int position, int count, StageReport plan)
        {
            this.count = count;
            context.Telemetry?.Observe("run", "stages", new ProgressReport(finished, count));
            if (Interactive)
            {
                context.Console.Write(new Rule($"[bold]{Markup.Escape(plan.Stage)}[/] ({position}/{count}): {Markup.Escape(Verb(plan.Action, dryRun: true))}, {Markup.Escape(plan.Reason)}").LeftJustified());
                context.Console.WriteLine(plan.CommandLine);
            }
            else context.Log($"stage {plan.Stage} ({position}/{count}): {Verb(plan.Action, dryRun: true)}, {plan.Reason}: {plan.CommandLine}");
        }

        public void Finished(StageReport report)
        {
            context.Telemetry?.Observe("run", "stages", new ProgressReport(++finished, count));
            string line = report.Action == StageAction.Skip
                ? $"{report.Stage}: skipped ({report.Reason})"
                : $"{report.Stage}: done in {report.Elapsed.TotalSeconds:F1} s{(report.Summary is { } s ? ": " + s : "")}";
            if (!Interactive) context.Log("stage " + line);
            else if (report.Action == StageAction.Skip) context.Console.MarkupLineInterpolated($"[grey]{line}[/]");
            else context.Console.WriteLine(line);
        }

        private bool Interactive => context.Settings.LogFormat == LogFormat.Text && context.Console.Profile.Capabilities.Interactive;
    }
}
