using MimFlow.Core.Safetensors;

namespace MimFlow.Tests.Cli;

public sealed class ModelCommandTests
{
    [Theory]
    [InlineData("beit_tiny_relpos")]
    [InlineData("vit_clip_tiny")]
    public async Task Import_forward_export_reimport_is_exact_and_matches_timm(string fixture)
    {
        using var dir = new TemporaryDirectory();
        string F(string name) => SharedFixtures.PathOf("timm", fixture, name);
        var import = await CliHarness.RunAsync("model", "import", "--from", "timm", "--config", F("timm_config.json"), "--weights", F("weights.safetensors"), "--out", dir.Combine("model"));
        Assert.True(import.ExitCode == 0, import.Error);

        var forward = await CliHarness.RunAsync("model", "forward", "--model", dir.Combine("model"), "--input", F("input.safetensors"), "--output", dir.Combine("y.safetensors"));
        Assert.True(forward.ExitCode == 0, forward.Error);
        using (var actual = SafetensorsFile.Open(dir.Combine("y.safetensors")))
        using (var expected = SafetensorsFile.Open(F("expected.safetensors")))
        {
            foreach (string name in new[] { "features", "logits" })
            {
                float[] a = actual.ReadFloat32(name), e = expected.ReadFloat32(name);
                double error = Math.Sqrt(a.Zip(e).Sum(p => (double)(p.First - p.Second) * (p.First - p.Second))) / Math.Sqrt(e.Sum(v => (double)v * v));
                Assert.True(error <= 1e-4, $"{name}: relative L2 {error:E2}");
            }
        }

        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", dir.Combine("model"), "--out", dir.Combine("timm"));
        Assert.True(export.ExitCode == 0, export.Error);
        var again = await CliHarness.RunAsync("model", "import", "--from", "timm", "--config", dir.Combine("timm", "timm_config.json"),
            "--weights", dir.Combine("timm", "weights.safetensors"), "--out", dir.Combine("again"));
        Assert.True(again.ExitCode == 0, again.Error);
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("again", "weights.safetensors")));
        using var original = SafetensorsFile.Open(F("weights.safetensors"));
        using var exported = SafetensorsFile.Open(dir.Combine("timm", "weights.safetensors"));
        Assert.Equal(original.Entries.Select(e => e.Name).Order(), exported.Entries.Select(e => e.Name).Order());
        foreach (var entry in original.Entries) Assert.Equal(original.ReadFloat32(entry.Name), exported.ReadFloat32(entry.Name));
    }

    [Fact]
    public async Task Mismatched_weights_are_refused_naming_the_parameters()
    {
        using var dir = new TemporaryDirectory();
        var outcome = await CliHarness.RunAsync("model", "import", "--from", "timm",
            "--config", SharedFixtures.PathOf("timm", "beit_tiny_relpos", "timm_config.json"),
            "--weights", SharedFixtures.PathOf("timm", "vit_clip_tiny", "weights.safetensors"), "--out", dir.Combine("m"));
        Assert.Equal(1, outcome.ExitCode);
        string line = Assert.Single(outcome.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("missing [", line);
        Assert.Contains("q_bias", line);
    }
}
