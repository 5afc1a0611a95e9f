using MimFlow.Cli;
using MimFlow.Cli.Pipelines;
using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.Execution;

namespace MimFlow.Tests.Cli;

public sealed class RunCommandTests
{
    private static CliStageExecutor Executor() => new(new CliContext(Spectre.Console.AnsiConsole.Console, TextWriter.Null), []);

    public static TheoryData<string> CommittedPipelines()
    {
        var data = new TheoryData<string>();
        foreach (string file in Directory.EnumerateFiles(RepositoryFiles.PathOf("pipelines"), "*.json").Order(StringComparer.Ordinal)) data.Add(Path.GetFileName(file));
        return data;
    }

    [Theory]
    [MemberData(nameof(CommittedPipelines))]
    public void Every_committed_pipeline_names_real_commands_and_options(string file)
    {
        var pipeline = PipelineFile.Load(RepositoryFiles.PathOf("pipelines", file), Executor());
        Assert.Equal(Path.GetFileNameWithoutExtension(file), pipeline.Name);
        Assert.NotEmpty(PipelineOrder.Of(pipeline));
    }

    [Fact]
    public void The_committed_set_has_the_three_pipelines_operators_start_from() =>
        Assert.Equal(["ade20k-finetune.json", "demo.json", "imagenet-beitv2.json", "pretrain-proof.json"],
            Directory.EnumerateFiles(RepositoryFiles.PathOf("pipelines"), "*.json").Select(Path.GetFileName).Order(StringComparer.Ordinal));

    [Fact]
    public async Task A_dry_run_prints_the_plan_with_each_command_line_and_runs_nothing()
    {
        using var dir = new TemporaryDirectory();
        Directory.CreateDirectory(dir.Combine("ade"));
        Directory.CreateDirectory(dir.Combine("backbone"));
        var outcome = await CliHarness.RunAsync("run", RepositoryFiles.PathOf("pipelines", "ade20k-finetune.json"), "--out", dir.Combine("run"), "--dry-run",
            "--var", $"ade20k={dir.Combine("ade")}", "--var", $"backbone={dir.Combine("backbone")}", "--var", "device=cpu");
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        Assert.Contains("plan (dry run)", outcome.Output);
        Assert.Contains($"mimflow finetune --task segment --layout ade20k --crop-size 512", outcome.Output);
        Assert.Contains("after 'segment' runs", outcome.Output);
        Assert.False(Directory.Exists(dir.Combine("run")));
    }

    [Fact]
    public async Task Redirected_output_prints_tables_plain_with_each_row_on_one_line()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunProcessAsync(new Dictionary<string, string>(), "run", RepositoryFiles.PathOf("pipelines", "demo.json"),
            "--out", dir.Combine("run"), "--dry-run");
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        var lines = outcome.Output.Split('\n');
        // The tokenize stage's whole command line (far wider than 80 columns) stands on one line of the plan.
        var tokenize = Assert.Single(lines, l => l.Contains("mimflow tokenize --layout imagenet"));
        Assert.Contains("--shard-mb 0.25", tokenize);
        Assert.True(tokenize.Length > 120, tokenize);
        Assert.DoesNotContain('\u001b', outcome.Output);
        Assert.DoesNotContain('│', outcome.Output);
    }

    [Fact]
    public async Task A_missing_external_input_is_named_before_anything_runs()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("run", RepositoryFiles.PathOf("pipelines", "ade20k-finetune.json"), "--out", dir.Path, "--var", $"ade20k={dir.Combine("nowhere")}");
        Assert.Equal(MimFlowCli.Failure, outcome.ExitCode);
        Assert.Contains("stage 'scan': missing input: 'data' is " + dir.Combine("nowhere") + ", which does not exist", outcome.Error);
    }

    [Fact]
    public async Task An_invalid_pipeline_file_fails_with_one_line_naming_the_file_and_the_reason()
    {
        using var dir = new TemporaryDirectory();
        string file = dir.Combine("bad.json");
        File.WriteAllText(file, """{ "pipeline": "bad", "stages": [ { "name": "a", "command": "tokenize", "parameters": { "codebook": 10 } } ] }""");
        var outcome = await CliHarness.RunAsync("run", file);
        Assert.Equal(MimFlowCli.Failure, outcome.ExitCode);
        Assert.Single(outcome.Error.Trim().Split('\n'));
        Assert.Contains($"{file}: stage 'a': parameter 'codebook' is not an option of 'mimflow tokenize'", outcome.Error);
    }

    [Fact]
    public void Stages_become_the_same_command_lines_and_pretraining_resumes_with_its_flag()
    {
        var executor = Executor();
        var pipeline = PipelineFile.Parse("""
            { "pipeline": "p", "stages": [
              { "name": "train", "command": "pretrain", "parameters": { "objective": "beit", "steps": 3, "no-such": false }, "inputs": { "shards": { "path": "/s" } }, "outputs": { "out": "r" } },
              { "name": "check", "command": "shards verify", "inputs": { "DIR": { "path": "/s" } } } ] }
            """.Replace("\"no-such\": false", "\"resume\": false"), "p.json", executor);
        var train = pipeline.Stage("train");
        var inputs = new Dictionary<string, string> { ["shards"] = "/s" };
        var outputs = new Dictionary<string, string> { ["out"] = "/run/r" };
        Assert.Equal("mimflow pretrain --objective beit --steps 3 --shards /s --out /run/r", executor.CommandLine(new ResolvedStage(train, inputs, outputs, Resume: false)));
        Assert.EndsWith("--out /run/r --resume", executor.CommandLine(new ResolvedStage(train, inputs, outputs, Resume: true)));
        Assert.Equal("mimflow shards verify /s", executor.CommandLine(new ResolvedStage(pipeline.Stage("check"), new Dictionary<string, string> { ["DIR"] = "/s" }, new Dictionary<string, string>(), false)));
        Assert.Equal(ResumeRule.Continues, executor.ResumeRuleOf("tokenize"));
        Assert.Equal("--resume", executor.ResumeRuleOf("finetune").Flag);
        Assert.Equal(ResumeRule.Restart, executor.ResumeRuleOf("datasets synth"));
        Assert.Null(executor.Find("demo"));
    }
}
