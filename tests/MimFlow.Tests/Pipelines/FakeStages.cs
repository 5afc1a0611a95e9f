using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.Execution;

namespace MimFlow.Tests.Pipelines;

/// <summary>
/// Commands for runner tests that write real files: <c>write</c> puts its text into out/value.txt, <c>append</c> copies
/// its input's value.txt and adds its text, <c>flaky</c> writes part.txt then fails while <see cref="FailuresLeft"/> > 0
/// (it resumes natively), <c>checkpointed</c> resumes with --resume when out/latest.json exists.
/// </summary>
internal sealed class FakeStages : IStageExecutor
{
    private static readonly Dictionary<string, CommandShape> Shapes = new(StringComparer.Ordinal)
    {
        ["write"] = new(new HashSet<string> { "out", "text" }, []),
        ["append"] = new(new HashSet<string> { "from", "out", "text" }, []),
        ["flaky"] = new(new HashSet<string> { "from", "out" }, []),
        ["checkpointed"] = new(new HashSet<string> { "out", "steps" }, []),
    };

    public List<(string Stage, bool Resume)> Runs { get; } = [];

    public int FailuresLeft { get; set; }

    public IEnumerable<string> Commands => Shapes.Keys;

    public CommandShape? Find(string command) => Shapes.GetValueOrDefault(command);

    public ResumeRule ResumeRuleOf(string command) => command switch
    {
        "flaky" => ResumeRule.Continues,
        "checkpointed" => ResumeRule.WithFlag("--resume", "latest.json"),
        _ => ResumeRule.Restart,
    };

    public string CommandLine(ResolvedStage stage) =>
        $"{stage.Stage.Command} " + string.Join(' ', stage.Parameters.Select(p => $"--{p.Key} {p.Value}").Concat(stage.Inputs.Concat(stage.Outputs).Select(p => $"--{p.Key} {p.Value}")));

    public Task<StageOutcome> RunAsync(ResolvedStage stage, CancellationToken cancellationToken)
    {
        Runs.Add((stage.Stage.Name, stage.Resume));
        string output = stage.Outputs["out"];
        Directory.CreateDirectory(output);
        string text = stage.Parameters.TryGetValue("text", out var t) ? t.Text! : "";
        switch (stage.Stage.Command)
        {
            case "write":
                File.WriteAllText(Path.Combine(output, "value.txt"), text);
                break;
            case "append":
                File.WriteAllText(Path.Combine(output, "value.txt"), File.ReadAllText(Path.Combine(stage.Inputs["from"], "value.txt")) + text);
                break;
            case "flaky":
                File.WriteAllText(Path.Combine(output, "part.txt"), "partial");
                if (FailuresLeft-- > 0) return Task.FromResult(new StageOutcome(false, null, "disk full"));
                File.WriteAllText(Path.Combine(output, "value.txt"), File.ReadAllText(Path.Combine(stage.Inputs["from"], "value.txt")));
                break;
            case "checkpointed":
                File.WriteAllText(Path.Combine(output, "latest.json"), "{}");
                if (FailuresLeft-- > 0) return Task.FromResult(new StageOutcome(false, null, "killed"));
                break;
        }
        return Task.FromResult(new StageOutcome(true, $"{stage.Stage.Name} wrote {text}", null));
    }
}
