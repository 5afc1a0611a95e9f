using System.Text.Json;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Cli;

public sealed class DataCommandTests
{
    [Fact]
    public async Task Masks_writes_an_npy_the_numpy_layout_and_a_preview_and_prints_the_statistics()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("masks", "--count", "50", "--grid", "14x14", "--num-masked", "75", "--seed", "2",
            "--out", dir.Combine("m.npy"), "--png", dir.Combine("m.png"));
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        byte[] file = File.ReadAllBytes(dir.Combine("m.npy"));
        int header = BitConverter.ToUInt16(file, 8);
        Assert.Contains("'shape': (50, 14, 14)", System.Text.Encoding.ASCII.GetString(file, 10, header));
        var data = file[(10 + header)..];
        Assert.Equal(50 * 196, data.Length);
        double mean = Enumerable.Range(0, 50).Average(i => data.Skip(i * 196).Take(196).Count(b => b == 1));
        Assert.Contains($"mean masked {mean:F2} patches", outcome.Output);
        using var preview = NetVips.Image.NewFromFile(dir.Combine("m.png"));
        Assert.True(preview.Width > 14 * 8);

        var bad = await CliHarness.RunAsync("masks", "--count", "5", "--grid", "14by14", "--out", dir.Combine("x.npy"));
        Assert.Equal(MimFlow.Cli.MimFlowCli.UsageError, bad.ExitCode);
        Assert.Contains("--grid", bad.Error);
    }

    [Fact]
    public async Task Scan_reports_counts_and_writes_its_files()
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = dir.Combine("data"), Images = 8, Classes = 2, MinSide = 64, MaxSide = 96,
        });
        File.WriteAllBytes(dir.Combine("data", "train", "n00000001", "broken.JPEG"), [0xFF, 0xD8, 0xFF]);
        var outcome = await CliHarness.RunAsync("scan", "--data", dir.Combine("data"), "--layout", "imagenet", "--out", dir.Combine("scan"));
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        Assert.Contains("6 ok", outcome.Output);
        Assert.Contains("1 quarantined", outcome.Output);
        using var report = JsonDocument.Parse(File.ReadAllText(dir.Combine("scan", "scan.json")));
        Assert.Equal(7, report.RootElement.GetProperty("listed").GetInt32());
        var line = JsonDocument.Parse(Assert.Single(File.ReadAllLines(dir.Combine("scan", "quarantine.jsonl")))).RootElement;
        Assert.Equal("train/n00000001/broken.JPEG", line.GetProperty("path").GetString());
        using var classes = JsonDocument.Parse(File.ReadAllText(dir.Combine("scan", "classes.json")));
        Assert.Equal(["n00000001", "n00000002"], classes.RootElement.GetProperty("classes").EnumerateArray().Select(e => e.GetString()));
    }
}
