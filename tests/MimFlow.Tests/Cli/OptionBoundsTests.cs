using System.Diagnostics;
using MimFlow.Cli;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Cli;

/// <summary>An option value out of its bounds is a usage error (exit 2) naming the option, found before any work.</summary>
public sealed class OptionBoundsTests
{
    private static void AssertUsage(CliHarness.Outcome outcome, string option)
    {
        Assert.Equal(MimFlowCli.UsageError, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("mimflow: ", line);
        Assert.Contains(option, line);
        Assert.Empty(outcome.Output);
    }

    [Theory]
    [InlineData("--count", "2000000000")]
    [InlineData("--count", "0")]
    [InlineData("--count", "-3")]
    [InlineData("--grid", "100000x100000")]
    [InlineData("--grid", "0x14")]
    [InlineData("--grid", "14by14")]
    [InlineData("--num-masked", "500")]
    [InlineData("--num-masked", "-1")]
    [InlineData("--min-block", "0")]
    [InlineData("--min-block", "1000")]
    public async Task Masks_refuses_out_of_bounds_values_with_a_usage_error(string option, string value)
    {
        using var dir = new TemporaryDirectory();
        var args = new List<string> { "masks", "--out", dir.Combine("m.npy") };
        if (option != "--count") args.AddRange(["--count", "4"]);
        args.AddRange([option, value]);
        var watch = Stopwatch.StartNew();
        AssertUsage(await CliHarness.RunAsync([.. args]), option);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"took {watch.Elapsed}");
        Assert.False(File.Exists(dir.Combine("m.npy")));
    }

    [Fact]
    public async Task Masks_accepts_values_at_the_bounds()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("masks", "--out", dir.Combine("m.npy"), "--count", "2", "--grid", "2x3", "--num-masked", "6", "--kind", "random");
        Assert.True(outcome.ExitCode == 0, outcome.Error);
    }

    [Theory]
    [InlineData("--max-pixels", "0")]
    [InlineData("--max-pixels", "-5")]
    [InlineData("--workers", "0")]
    [InlineData("--workers", "-2")]
    public async Task Scan_refuses_out_of_bounds_values_with_a_usage_error(string option, string value)
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = dir.Combine("data"), Images = 2, Classes = 1, MinSide = 32, MaxSide = 40,
        });
        AssertUsage(await CliHarness.RunAsync("scan", "--data", dir.Combine("data"), "--layout", "imagenet", "--out", dir.Combine("scan"), option, value), option);
        Assert.False(Directory.Exists(dir.Combine("scan")));
    }
}
