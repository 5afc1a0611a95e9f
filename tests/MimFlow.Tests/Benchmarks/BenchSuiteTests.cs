using MimFlow.Cli;
using MimFlow.Benchmarks;
using MimFlow.Tests.Cli;

namespace MimFlow.Tests.Benchmarks;

public sealed class BenchSuiteTests
{
    private static SuiteResult Result(params (string Stage, double Ratio)[] stages) => new(
        stages.Select(s => new StageFigure(s.Stage, "img/s", s.Ratio * 100, [s.Ratio * 100], BenchSuite.CpuReference, s.Ratio, 1 << 20, null, "")).ToList(),
        new Dictionary<string, double> { [BenchSuite.CpuReference] = 100 }, "short", "cpu",
        new Dictionary<string, string> { ["os"] = "test", ["cores"] = "2", ["gpu"] = "none" });

    [Fact]
    public async Task Check_fails_naming_the_stage_that_fell_below_its_tolerance_and_passes_within_it()
    {
        using var dir = new TemporaryDirectory();
        string baseline = dir.Combine("baseline.json");
        File.WriteAllText(baseline, BenchBaseline.Accept(Result(("decode", 0.5), ("feeder", 0.2)), tolerance: 0.25).ToJson());

        string within = dir.Combine("within.json");
        File.WriteAllText(within, SuiteJson.Write(Result(("decode", 0.4), ("feeder", 0.25))));
        var ok = await CliHarness.RunAsync("bench", "--results", within, "--check", baseline);
        Assert.True(ok.ExitCode == 0, ok.Error);
        Assert.Contains("-20.0%", ok.Output);
        Assert.DoesNotContain("REGRESSED", ok.Output);

        string slower = dir.Combine("slower.json");
        File.WriteAllText(slower, SuiteJson.Write(Result(("decode", 0.5), ("feeder", 0.1))));
        var regressed = await CliHarness.RunAsync("bench", "--results", slower, "--check", baseline);
        Assert.Equal(MimFlowCli.Failure, regressed.ExitCode);
        Assert.Contains("REGRESSED", regressed.Output);
        Assert.Contains("regression against", regressed.Error);
        Assert.Contains("feeder -50.0%", regressed.Error);
        Assert.DoesNotContain("decode", regressed.Error);

        string missing = dir.Combine("missing.json");
        File.WriteAllText(missing, SuiteJson.Write(Result(("decode", 0.5))));
        var notMeasured = await CliHarness.RunAsync("bench", "--results", missing, "--check", baseline);
        Assert.Equal(MimFlowCli.Failure, notMeasured.ExitCode);
        Assert.Contains("feeder (not measured)", notMeasured.Error);
    }

    [Fact]
    public void The_committed_baseline_covers_every_stage_of_the_short_form()
    {
        var baseline = BenchBaseline.Read(RepositoryFiles.PathOf("ops", "bench", "baseline.json"));
        Assert.Equal("short", baseline.Form);
        Assert.Equal(BenchSuite.StageNames.Order(), baseline.Stages.Keys.Order());
        Assert.All(baseline.Stages.Values, s => Assert.True(s.Ratio > 0 && s.Tolerance is > 0 and < 1));
    }

    [Fact]
    public async Task The_suite_measures_each_stage_as_a_median_and_a_ratio_to_its_reference()
    {
        using var dir = new TemporaryDirectory();
        string json = dir.Combine("bench.json");
        var outcome = await CliHarness.RunAsync("bench", "--short", "--repeats", "1", "--stages", "decode,shard-read,feeder", "--work", dir.Combine("work"), "--json", json);
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        var result = SuiteJson.Read(json);
        Assert.Equal(["decode", "shard-read", "feeder"], result.Stages.Select(s => s.Stage));
        Assert.All(result.Stages, s =>
        {
            Assert.True(s.Median > 0, s.Stage);
            Assert.Equal(s.Median / result.References[s.Reference], s.Ratio, 9);
            Assert.True(s.PeakMemoryBytes > 0);
        });
        Assert.True(result.References[BenchSuite.ComputeReference] > 0);
        // The feeder is put next to decoding its stored images alone, in the same repeat (PIL's rate when Python has PIL).
        var feeder = result.Stages.Single(s => s.Stage == "feeder");
        Assert.Matches(@"\d+\.\d\d of the stored images' decode-only rate with the managed decoder \(\d+ img/s\)(, \d+\.\d\d of PIL's \(\d+ img/s\)|; PIL's decode-only rate not measured \(.+\))$", feeder.Detail);
        Assert.NotEmpty(Directory.EnumerateFiles(dir.Combine("work", "stored"), "*.jpg"));
        Assert.False(string.IsNullOrEmpty(result.Versions["libvips"]));
        Assert.Contains("mimflow bench (short form)", outcome.Output);
    }
}
