using System.Security.Cryptography;
using MimFlow.Cli;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using MimFlow.Tests.Models;

namespace MimFlow.Tests.Cli;

/// <summary>A command never writes over what it reads: outputs are compared with inputs after resolving links.</summary>
public sealed class OutputIsInputTests
{
    /// <summary>Every file under a folder with its content hash, to show nothing changed.</summary>
    private static Dictionary<string, string> Snapshot(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    private static void AssertRefused(CliHarness.Outcome outcome, params string[] named)
    {
        Assert.Equal(MimFlowCli.UsageError, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("mimflow: ", line);
        foreach (string name in named) Assert.Contains(name, line);
    }

    [Fact]
    public async Task Export_into_the_model_it_reads_is_refused_and_writes_nothing()
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        var before = Snapshot(model);
        Directory.CreateSymbolicLink(dir.Combine("link"), model);

        AssertRefused(await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", model, "--out", model), "--out", "--model");
        AssertRefused(await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", model, "--out", Path.Combine(model, "timm")), "--out");
        AssertRefused(await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", model, "--out", dir.Combine("link")), "--out");
        AssertRefused(await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", dir.Combine("link"), "--out", model + "/./"), "--out");
        Assert.Equal(before, Snapshot(model));
        Assert.Throws<ArgumentException>(() => ModelExport.Run(new ModelExportRequest("timm", model, model)));
        Assert.Equal(before, Snapshot(model));

        var beside = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", model, "--out", dir.Combine("timm"));
        Assert.True(beside.ExitCode == 0, beside.Error);
    }

    [Fact]
    public async Task Forward_into_a_file_of_the_model_or_onto_its_input_is_refused_and_writes_nothing()
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        var input = new SafetensorsWriter();
        input.AddFloat32("pixel_values", [1, 3, 16, 16], new float[3 * 16 * 16]);
        string inputPath = dir.Combine("x.safetensors");
        input.Write(inputPath);
        byte[] inputBytes = File.ReadAllBytes(inputPath);
        var before = Snapshot(model);
        File.CreateSymbolicLink(dir.Combine("weights-link.safetensors"), Path.Combine(model, ModelDirectory.WeightsFileName));
        Directory.CreateSymbolicLink(dir.Combine("model-link"), model);

        string[] Forward(string output) => ["model", "forward", "--model", model, "--input", inputPath, "--output", output];
        AssertRefused(await CliHarness.RunAsync(Forward(Path.Combine(model, ModelDirectory.WeightsFileName))), "--output", "--model");
        AssertRefused(await CliHarness.RunAsync(Forward(Path.Combine(model, ModelDirectory.ConfigFileName))), "--output");
        AssertRefused(await CliHarness.RunAsync(Forward(Path.Combine(model, "features.safetensors"))), "--output");
        AssertRefused(await CliHarness.RunAsync(Forward(dir.Combine("weights-link.safetensors"))), "--output");
        AssertRefused(await CliHarness.RunAsync(Forward(Path.Combine(dir.Combine("model-link"), ModelDirectory.WeightsFileName))), "--output");
        AssertRefused(await CliHarness.RunAsync(Forward(inputPath)), "--output", "--input");
        Assert.Equal(before, Snapshot(model));
        Assert.Equal(inputBytes, File.ReadAllBytes(inputPath));
        Assert.False(File.Exists(Path.Combine(model, "features.safetensors")));

        var beside = await CliHarness.RunAsync(Forward(dir.Combine("y.safetensors")));
        Assert.True(beside.ExitCode == 0, beside.Error);
    }

    [Fact]
    public async Task Import_into_the_folder_it_reads_is_refused_and_writes_nothing()
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", model, "--out", dir.Combine("hub"));
        Assert.True(export.ExitCode == 0, export.Error);
        var before = Snapshot(dir.Combine("hub"));
        AssertRefused(await CliHarness.RunAsync("model", "import", "--from", "timm", "--weights", dir.Combine("hub"), "--out", dir.Combine("hub")), "--out", "--weights");
        AssertRefused(await CliHarness.RunAsync("model", "import", "--from", "timm", "--weights", dir.Combine("hub", "model.safetensors"),
            "--config", dir.Combine("hub", "timm_config.json"), "--out", dir.Combine("hub")), "--out");
        Assert.Equal(before, Snapshot(dir.Combine("hub")));
    }
}
