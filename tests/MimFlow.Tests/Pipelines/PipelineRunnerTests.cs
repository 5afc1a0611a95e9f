using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.Execution;

namespace MimFlow.Tests.Pipelines;

public sealed class PipelineRunnerTests
{
    private const string Chain = """
        { "name": "a", "command": "write", "parameters": { "text": "${text}" }, "outputs": { "out": "a" } },
        { "name": "b", "command": "append", "parameters": { "text": "+b" }, "inputs": { "from": "a.out" }, "outputs": { "out": "b" } },
        { "name": "side", "command": "write", "parameters": { "text": "side" }, "outputs": { "out": "side" } },
        { "name": "c", "command": "flaky", "inputs": { "from": "b.out" }, "outputs": { "out": "c" } }
        """;

    private static PipelineDefinition Pipeline(FakeStages stages, string text = "a") =>
        PipelineFile.Parse($$"""{ "pipeline": "chain", "variables": { "text": "a" }, "stages": [ {{Chain}} ] }""", "chain.json", stages,
            new Dictionary<string, string> { ["text"] = text });

    private static Task<PipelineRunResult> Run(FakeStages stages, string folder, string text = "a", string? from = null, string? only = null, bool dryRun = false) =>
        new PipelineRunner(stages).RunAsync(new RunRequest(Pipeline(stages, text), folder, from, only, dryRun));

    private static string[] Ran(FakeStages stages) => stages.Runs.Select(r => r.Stage).ToArray();

    [Fact]
    public async Task A_second_run_skips_every_complete_stage()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        var first = await Run(stages, dir.Path);
        Assert.True(first.Succeeded, first.Error);
        Assert.Equal(["a", "b", "side", "c"], Ran(stages));
        Assert.Equal("a+b", File.ReadAllText(dir.Combine("c", "value.txt")));

        stages.Runs.Clear();
        var second = await Run(stages, dir.Path);
        Assert.Empty(stages.Runs);
        Assert.All(second.Stages, s => Assert.Equal(StageAction.Skip, s.Action));
        Assert.Equal("b wrote +b", second.Stages.Single(s => s.Stage == "b").Summary);
    }

    [Fact]
    public async Task A_changed_parameter_reruns_its_stage_and_everything_downstream_only()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        await Run(stages, dir.Path);
        stages.Runs.Clear();
        var result = await Run(stages, dir.Path, text: "A");
        Assert.Equal(["a", "b", "c"], Ran(stages));
        Assert.Equal("its parameters or inputs changed", result.Stages.Single(s => s.Stage == "a").Reason);
        Assert.Equal("its parameters or inputs changed", result.Stages.Single(s => s.Stage == "c").Reason);
        Assert.Equal("A+b", File.ReadAllText(dir.Combine("c", "value.txt")));
    }

    [Fact]
    public async Task An_output_changed_on_disk_reruns_that_stage_and_what_reads_it()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        await Run(stages, dir.Path);
        stages.Runs.Clear();
        File.WriteAllText(dir.Combine("b", "value.txt"), "tampered");
        var result = await Run(stages, dir.Path);
        Assert.Equal(["b", "c"], Ran(stages));
        Assert.Equal("output out changed on disk since it finished", result.Stages.Single(s => s.Stage == "b").Reason);
        Assert.Equal("a+b", File.ReadAllText(dir.Combine("c", "value.txt")));
    }

    [Fact]
    public async Task A_failed_stage_stops_the_run_and_resumes_on_the_next_one()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages { FailuresLeft = 1 };
        var failed = await Run(stages, dir.Path);
        Assert.False(failed.Succeeded);
        Assert.Equal("c", failed.FailedStage);
        Assert.Contains("stage 'c' (mimflow flaky) failed: disk full", failed.Error);
        Assert.True(File.Exists(dir.Combine(".mimflow", "stages", "c.started.json")));
        Assert.False(File.Exists(dir.Combine(".mimflow", "stages", "c.json")));

        stages.Runs.Clear();
        var resumed = await Run(stages, dir.Path);
        Assert.True(resumed.Succeeded, resumed.Error);
        Assert.Equal([("c", true)], stages.Runs);
        Assert.Equal(StageAction.Resume, resumed.Stages.Single(s => s.Stage == "c").Action);
        Assert.True(File.Exists(dir.Combine("c", "part.txt")), "a native resume keeps what the attempt wrote");
        Assert.False(File.Exists(dir.Combine(".mimflow", "stages", "c.started.json")));
    }

    [Fact]
    public async Task A_flag_resume_is_used_only_when_the_attempt_left_its_marker()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages { FailuresLeft = 1 };
        var pipeline = PipelineFile.Parse("""{ "pipeline": "p", "stages": [ { "name": "train", "command": "checkpointed", "parameters": { "steps": 10 }, "outputs": { "out": "run" } } ] }""", "p.json", stages);
        var runner = new PipelineRunner(stages);
        Assert.False((await runner.RunAsync(new RunRequest(pipeline, dir.Path))).Succeeded);
        Assert.True((await runner.RunAsync(new RunRequest(pipeline, dir.Path))).Succeeded);
        Assert.Equal([("train", false), ("train", true)], stages.Runs);

        // The same attempt without its marker starts again on a cleared folder.
        stages.Runs.Clear();
        stages.FailuresLeft = 1;
        var changed = PipelineFile.Parse("""{ "pipeline": "p", "stages": [ { "name": "train", "command": "checkpointed", "parameters": { "steps": 20 }, "outputs": { "out": "run" } } ] }""", "p.json", stages);
        Assert.False((await runner.RunAsync(new RunRequest(changed, dir.Path))).Succeeded);
        File.Delete(dir.Combine("run", "latest.json"));
        File.WriteAllText(dir.Combine("run", "stale.txt"), "from the attempt");
        var restarted = await runner.RunAsync(new RunRequest(changed, dir.Path));
        Assert.Equal([("train", false), ("train", false)], stages.Runs);
        Assert.Contains("starts again", restarted.Stages[0].Reason);
        Assert.False(File.Exists(dir.Combine("run", "stale.txt")), "a restart clears the attempt's outputs");
    }

    [Fact]
    public async Task From_reruns_the_stage_and_its_downstream_and_only_reruns_one_stage()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        await Run(stages, dir.Path);
        stages.Runs.Clear();
        await Run(stages, dir.Path, from: "b");
        Assert.Equal(["b", "c"], Ran(stages));
        stages.Runs.Clear();
        await Run(stages, dir.Path, only: "side");
        Assert.Equal(["side"], Ran(stages));
    }

    [Fact]
    public async Task Only_refuses_a_stage_whose_inputs_are_not_complete()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        var error = await Assert.ThrowsAsync<PipelineException>(() => Run(stages, dir.Path, only: "b"));
        Assert.Contains("stage 'b' reads a.out, but stage 'a' has not finished in this run folder", error.Message);
        Assert.Empty(stages.Runs);
    }

    [Fact]
    public async Task A_dry_run_plans_without_running_or_writing()
    {
        using var dir = new TemporaryDirectory();
        var stages = new FakeStages();
        var plan = await Run(stages, dir.Path, dryRun: true);
        Assert.Empty(stages.Runs);
        Assert.False(Directory.Exists(dir.Combine(".mimflow")));
        Assert.Equal(["not run yet", "after 'a' runs", "not run yet", "after 'b' runs"], plan.Stages.Select(s => s.Reason));
        Assert.Equal("append --text +b --from " + dir.Combine("a") + " --out " + dir.Combine("b"), plan.Stages[1].CommandLine);

        await Run(stages, dir.Path);
        stages.Runs.Clear();
        var after = await Run(stages, dir.Path, text: "changed", dryRun: true);
        Assert.Empty(stages.Runs);
        Assert.Equal([StageAction.Run, StageAction.Run, StageAction.Skip, StageAction.Run], after.Stages.Select(s => s.Action));
    }

    [Fact]
    public async Task A_second_run_on_the_same_folder_is_refused_while_the_first_holds_it()
    {
        using var dir = new TemporaryDirectory();
        Directory.CreateDirectory(dir.Combine(".mimflow"));
        using (new FileStream(dir.Combine(".mimflow", "run.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            var stages = new FakeStages();
            var error = await Assert.ThrowsAsync<PipelineException>(() => Run(stages, dir.Path));
            Assert.Contains("another mimflow run is using the run folder", error.Message);
            Assert.Empty(stages.Runs);
        }
        Assert.True((await Run(new FakeStages(), dir.Path)).Succeeded);
        Assert.False(File.Exists(dir.Combine(".mimflow", "run.lock")), "the lock goes with the run");
    }
}
