using System.CommandLine;
using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.Execution;

namespace MimFlow.Cli.Pipelines;

/// <summary>
/// Runs pipeline stages as <c>mimflow</c> commands in this process: each parameter, input and output becomes the option
/// (or positional argument) of the same name, so a stage means exactly what the same command line means.
/// </summary>
internal sealed class CliStageExecutor : IStageExecutor
{
    /// <summary>How each command continues an unfinished attempt; the rest start again on cleared outputs.</summary>
    private static readonly Dictionary<string, ResumeRule> ResumeRules = new(StringComparer.Ordinal)
    {
        ["tokenize"] = ResumeRule.Continues,
        ["pretrain"] = ResumeRule.WithFlag("--resume", "latest.json"),
        ["finetune"] = ResumeRule.WithFlag("--resume", "latest.json"),
    };

    private readonly CliContext context;
    private readonly IReadOnlyList<string> globalArguments;
    private readonly Dictionary<string, Command> commands;

    /// <param name="globalArguments">Options every stage gets (e.g. <c>--libtorch DIR</c>).</param>
    public CliStageExecutor(CliContext context, IReadOnlyList<string> globalArguments)
    {
        this.context = context;
        this.globalArguments = globalArguments;
        commands = new Dictionary<string, Command>(StringComparer.Ordinal);
        Collect(MimFlowCli.Build(context), "");
    }

    public IEnumerable<string> Commands => commands.Keys;

    public CommandShape? Find(string command) => commands.TryGetValue(command, out var found)
        ? new CommandShape(found.Options.Where(o => o.Name.StartsWith("--", StringComparison.Ordinal)).Select(o => o.Name[2..]).ToHashSet(StringComparer.Ordinal),
            found.Arguments.Select(a => a.Name).ToList())
        : null;

    public ResumeRule ResumeRuleOf(string command) => ResumeRules.GetValueOrDefault(command, ResumeRule.Restart);

    public string CommandLine(ResolvedStage stage) =>
        "mimflow " + string.Join(' ', Arguments(stage).Select(a => a.Contains(' ', StringComparison.Ordinal) || a.Length == 0 ? $"\"{a}\"" : a));

    public async Task<StageOutcome> RunAsync(ResolvedStage stage, CancellationToken cancellationToken)
    {
        string? summary = null;
        var errors = new LastLineWriter(context.Error);
        var stageContext = context with { Error = errors, Summary = line => summary = line };
        int exit = await MimFlowCli.RunAsync(Arguments(stage).ToArray(), stageContext, cancellationToken);
        if (exit == 130) throw new OperationCanceledException($"stage '{stage.Stage.Name}' was cancelled", cancellationToken);
        return new StageOutcome(exit == 0, summary, exit == 0 ? null : errors.Last?.Replace("mimflow: ", "", StringComparison.Ordinal) ?? $"exit code {exit}");
    }

    private List<string> Arguments(ResolvedStage stage)
    {
        var arguments = stage.Stage.Command.Split(' ').ToList();
        var positional = new Dictionary<string, string>(StringComparer.Ordinal);
        var shape = Find(stage.Stage.Command)!;
        void Add(string name, string value)
        {
            if (shape.Arguments.Contains(name)) positional[name] = value;
            else arguments.AddRange([$"--{name}", value]);
        }
        foreach (var (name, value) in stage.Parameters)
        {
            if (value.Flag is bool flag)
            {
                if (flag) arguments.Add($"--{name}");
            }
            else Add(name, value.Text!);
        }
        foreach (var (name, path) in stage.Inputs) Add(name, path);
        foreach (var (name, path) in stage.Outputs) Add(name, path);
        if (stage.Resume && ResumeRuleOf(stage.Stage.Command).Flag is { } resume) arguments.Add(resume);
        arguments.AddRange(globalArguments);
        arguments.AddRange(shape.Arguments.Where(positional.ContainsKey).Select(a => positional[a]));
        return arguments;
    }

    private void Collect(Command command, string prefix)
    {
        foreach (var sub in command.Subcommands)
        {
            string name = prefix.Length == 0 ? sub.Name : $"{prefix} {sub.Name}";
            // Commands that drive other commands stay out of pipelines.
            if (name is "run" or "demo") continue;
            if (sub.Action is not null) commands[name] = sub;
            Collect(sub, name);
        }
    }

    /// <summary>Passes error lines through and keeps the last one, which names what went wrong.</summary>
    private sealed class LastLineWriter(TextWriter inner) : TextWriter
    {
        public string? Last { get; private set; }

        public override System.Text.Encoding Encoding => inner.Encoding;

        public override void Write(char value) => inner.Write(value);

        public override void WriteLine(string? value)
        {
            if (!string.IsNullOrWhiteSpace(value)) Last = value.Trim();
            inner.WriteLine(value);
        }
    }
}
