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

    [Fact]
    public async Task Datasets_pack_writes_wds_and_hf_parquet_that_scan_check_and_preview_read()
    {
        using var dir = new TemporaryDirectory();
        string data = dir.Combine("data"), wds = dir.Combine("wds"), hf = dir.Combine("hf");
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.ImageNet, OutputDirectory = data, Images = 8, Classes = 2, MinSide = 48, MaxSide = 64 });

        var pack = await CliHarness.RunAsync("datasets", "pack", "--from", data, "--layout", "imagenet", "--format", "wds", "--out", wds, "--shard-mb", "0.002");
        Assert.True(pack.ExitCode == 0, pack.Error);
        Assert.Contains("train: 6 samples", pack.Output);
        Assert.Contains("val: 2 samples", pack.Output);
        Assert.True(File.Exists(Path.Combine(wds, "classes.json")));
        var again = await CliHarness.RunAsync("datasets", "pack", "--from", data, "--layout", "imagenet", "--format", "wds", "--out", wds);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("--force", again.Error);

        var scan = await CliHarness.RunAsync("scan", "--data", Path.Combine(wds, "train", "imagenet-train-{000000..000002}.tar"), "--layout", "wds", "--out", dir.Combine("scan"));
        Assert.True(scan.ExitCode == 0, scan.Error);
        Assert.Contains("3 ok", scan.Output);
        var val = await CliHarness.RunAsync("scan", "--data", wds, "--layout", "wds", "--split", "val", "--out", dir.Combine("scan-val"));
        Assert.True(val.ExitCode == 0, val.Error);
        Assert.Contains("2 ok", val.Output);
        using (var classes = JsonDocument.Parse(File.ReadAllText(dir.Combine("scan-val", "classes.json"))))
            Assert.Equal(["n00000001", "n00000002"], classes.RootElement.GetProperty("classes").EnumerateArray().Select(e => e.GetString()));

        pack = await CliHarness.RunAsync("datasets", "pack", "--from", data, "--layout", "imagenet", "--format", "hf-parquet", "--out", hf, "--split", "train");
        Assert.True(pack.ExitCode == 0, pack.Error);
        Assert.True(File.Exists(Path.Combine(hf, "data", "train-00000-of-00001.parquet")));
        var check = await CliHarness.RunAsync("datasets", "check", "--data", hf, "--layout", "hf-parquet");
        Assert.True(check.ExitCode == 0, check.Error);
        Assert.Contains("6 images and 0 label maps decoded", check.Output);
        var preview = await CliHarness.RunAsync("datasets", "preview", "--data", hf, "--layout", "hf-parquet", "--batch", "4", "--out", dir.Combine("preview.png"));
        Assert.True(preview.ExitCode == 0, preview.Error);
        Assert.True(File.Exists(dir.Combine("preview.png")));

        var noVal = await CliHarness.RunAsync("scan", "--data", hf, "--layout", "hf-parquet", "--split", "val", "--out", dir.Combine("scan-hf-val"));
        Assert.Equal(1, noVal.ExitCode);
        Assert.Contains("no validation shards", noVal.Error);
        var unknown = await CliHarness.RunAsync("finetune", "--task", "classify", "--model", "vit-tiny", "--data", hf, "--layout", "folder", "--out", dir.Combine("run"));
        Assert.Equal(2, unknown.ExitCode);
    }
}
