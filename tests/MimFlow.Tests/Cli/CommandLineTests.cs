using System.Text.Json;
using MimFlow.Cli;

namespace MimFlow.Tests.Cli;

public sealed class CommandLineTests
{
    public static TheoryData<string[]> EveryCommand()
    {
        var data = new TheoryData<string[]>();
        var root = MimFlowCli.Build(new CliContext(Spectre.Console.AnsiConsole.Console, TextWriter.Null));
        void Walk(System.CommandLine.Command command, string[] path)
        {
            data.Add(path);
            foreach (var sub in command.Subcommands) Walk(sub, [.. path, sub.Name]);
        }
        Walk(root, []);
        return data;
    }

    [Theory]
    [MemberData(nameof(EveryCommand))]
    public async Task Help_of_every_command_describes_it_and_exits_zero(string[] path)
    {
        var outcome = await CliHarness.RunAsync([.. path, "--help"]);
        Assert.Equal(0, outcome.ExitCode);
        Assert.Contains("Usage:", outcome.Output);
        Assert.Contains(path.Length == 0 ? "mimflow" : path[^1], outcome.Output.Replace("MimFlow.Cli", "mimflow"));
        Assert.Empty(outcome.Error);
    }

    [Theory]
    [InlineData(new[] { "datasets", "synth", "--kind", "coco", "--out", "x", "--images", "3" }, "coco")]
    [InlineData(new[] { "datasets", "synth", "--kind", "imagenet", "--out", "x", "--images", "many" }, "many")]
    [InlineData(new[] { "datasets", "synth", "--kind", "imagenet", "--images", "3" }, "--out")]
    [InlineData(new[] { "doctor", "--frobnicate" }, "--frobnicate")]
    [InlineData(new[] { "no-such-command" }, "no-such-command")]
    public async Task A_bad_argument_exits_non_zero_with_one_line_naming_it(string[] args, string named)
    {
        var outcome = await CliHarness.RunAsync(args);
        Assert.Equal(MimFlowCli.UsageError, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("mimflow: ", line);
        Assert.Contains(named, line);
        Assert.Contains("--help", line);
        Assert.Empty(outcome.Output);
    }

    [Fact]
    public async Task A_failing_command_exits_one_with_the_reason()
    {
        using var dir = new TemporaryDirectory();
        File.WriteAllText(dir.Combine("keep.txt"), "x");
        var outcome = await CliHarness.RunAsync("datasets", "synth", "--kind", "imagenet", "--out", dir.Path, "--images", "2");
        Assert.Equal(MimFlowCli.Failure, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(dir.Path, line);
        Assert.Contains("--force", line);
    }

    [Fact]
    public async Task Synth_writes_the_requested_dataset()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("datasets", "synth", "--kind", "ade20k", "--out", dir.Path, "--images", "5",
            "--classes", "20", "--min-size", "64", "--max-size", "96", "--seed", "3");
        Assert.Equal(0, outcome.ExitCode);
        Assert.Contains("wrote 4 training + 1 validation images", outcome.Output);
        Assert.Equal(5, Directory.GetFiles(dir.Combine("ADEChallengeData2016", "annotations"), "*.png", SearchOption.AllDirectories).Length);
        using var manifest = JsonDocument.Parse(File.ReadAllText(dir.Combine("synth.json")));
        Assert.Equal(20, manifest.RootElement.GetProperty("classes").GetInt32());
        Assert.Equal(3UL, manifest.RootElement.GetProperty("seed").GetUInt64());
    }

    [Fact]
    public async Task Doctor_reports_versions_fix_device_and_a_passing_self_test()
    {
        var outcome = await CliHarness.RunAsync("doctor", "--json");
        Assert.Equal(0, outcome.ExitCode);
        using var report = JsonDocument.Parse(outcome.Output);
        var root = report.RootElement;
        Assert.Equal(Environment.ProcessorCount, root.GetProperty("Host").GetProperty("LogicalCores").GetInt32());
        Assert.StartsWith("8.", root.GetProperty("LibvipsVersion").GetString());
        var backend = root.GetProperty("Backend");
        Assert.Equal("0.107.0", backend.GetProperty("TorchSharpVersion").GetString());
        Assert.StartsWith("2.10.0", backend.GetProperty("LibTorchVersion").GetString());
        Assert.True(root.GetProperty("SelfTest").GetProperty("Passed").GetBoolean());
        Assert.Equal("cpu", root.GetProperty("SelfTest").GetProperty("Device").GetString());

        var table = await CliHarness.RunAsync("doctor");
        Assert.Equal(0, table.ExitCode);
        foreach (string row in new[] { ".NET", "TorchSharp", "libtorch", "libstdc++ fix", "device", "libvips", "cores", "memory", "self-test" })
            Assert.Contains(row, table.Output);
    }

    [Fact]
    public async Task A_missing_cuda_libtorch_folder_is_one_clear_error()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunProcessAsync(new Dictionary<string, string> { ["MIMFLOW_LIBTORCH"] = dir.Path }, "doctor");
        Assert.Equal(MimFlowCli.Failure, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(Path.Combine(dir.Path, "libc10.so"), line);
        Assert.Contains("MIMFLOW_LIBTORCH", line);
    }

    [Fact]
    public async Task Processes_starting_at_once_share_one_cached_fix()
    {
        using var cache = new TemporaryDirectory();
        var environment = new Dictionary<string, string> { ["MIMFLOW_CACHE_DIR"] = cache.Path };
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => CliHarness.RunProcessAsync(environment, "doctor", "--json")));
        Assert.All(outcomes, o => Assert.True(o.ExitCode == 0, o.Error));
        var loaded = outcomes.Select(o => JsonDocument.Parse(o.Output).RootElement.GetProperty("Backend")).ToList();
        bool applied = loaded[0].GetProperty("Fix").GetProperty("Applied").GetBoolean();
        Assert.All(loaded, b => Assert.Equal(applied, b.GetProperty("Fix").GetProperty("Applied").GetBoolean()));
        var files = Directory.EnumerateFiles(cache.Path, "*", SearchOption.AllDirectories).ToList();
        if (applied)
        {
            string copy = Assert.Single(files);
            Assert.All(loaded, b => Assert.Equal(copy, b.GetProperty("LibTorchSharpPath").GetString()));
        }
        else
        {
            Assert.Empty(files);
        }
    }

    [Fact]
    public async Task Demo_runs_the_embedded_pipeline_then_skips_every_complete_stage()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("demo", "--out", dir.Path);
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        string[] stages = ["backend", "synth-imagenet", "synth-ade20k", "check-imagenet", "check-ade20k", "scan-imagenet", "scan-ade20k", "preview-masks",
            "preview-segmentation", "init-tokenizer", "init-student", "tokenize", "verify-shards", "pretrain", "plot-pretrain", "finetune"];
        foreach (string stage in stages) Assert.Contains($"{stage}: done in", outcome.Output);
        Assert.Contains($"{stages.Length} stage(s) ran, 0 skipped", outcome.Output);
        Assert.Contains("20 images and 20 label maps decoded", outcome.Output);
        Assert.True(File.Exists(Path.Combine(dir.Path, "imagenet", "synth.json")));
        Assert.True(File.Exists(Path.Combine(dir.Path, "scan", "imagenet", "scan.json")));
        Assert.True(new FileInfo(Path.Combine(dir.Path, "masked-batch.png")).Length > 0);
        Assert.True(new FileInfo(Path.Combine(dir.Path, "segmentation-batch.png")).Length > 0);
        Assert.True(File.Exists(Path.Combine(dir.Path, "shards", "manifest.json")));
        Assert.True(File.Exists(Path.Combine(dir.Path, "runs", "beit-plots", "loss.png")));
        var losses = MimFlow.Training.Runs.MetricsLog.Read(Path.Combine(dir.Path, "runs", "beit")).Select(e => e["loss"]!.GetValue<double>()).ToList();
        Assert.Equal(30, losses.Count);
        Assert.True(losses.TakeLast(5).Average() < losses.Take(5).Average(), "the demo's pretraining loss must fall");
        Assert.True(File.Exists(Path.Combine(dir.Path, "runs", "finetune", "eval.json")));
        // 60 generated images and an untrained tokenizer cannot show that pretraining helps: the demo does not pretend to.
        Assert.DoesNotContain("random", outcome.Output);
        foreach (string stage in stages) Assert.True(File.Exists(Path.Combine(dir.Path, ".mimflow", "stages", stage + ".json")), stage);

        // Everything is complete and unchanged: the second run runs nothing and says why.
        var again = await CliHarness.RunAsync("demo", "--out", dir.Path);
        Assert.True(again.ExitCode == 0, again.Error);
        Assert.Contains($"0 stage(s) ran, {stages.Length} skipped", again.Output);
        Assert.Contains("tokenize: skipped (complete: outputs and inputs unchanged)", again.Output);
    }
}
