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
        Assert.Contains(fixture == "beit_tiny_relpos" ? "as beit_base_patch16_224 with model_args embed_dim=192, depth=3, num_heads=3" : "as vit_tiny_patch16_224", export.Output);
        // The hub folder alone, and the legacy pair (timm_config.json + the weights file) still.
        var again = await CliHarness.RunAsync("model", "import", "--from", "timm", "--weights", dir.Combine("timm"), "--out", dir.Combine("again"));
        Assert.True(again.ExitCode == 0, again.Error);
        var legacy = await CliHarness.RunAsync("model", "import", "--from", "timm", "--config", dir.Combine("timm", "timm_config.json"),
            "--weights", dir.Combine("timm", "model.safetensors"), "--out", dir.Combine("legacy"));
        Assert.True(legacy.ExitCode == 0, legacy.Error);
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("again", "weights.safetensors")));
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("legacy", "weights.safetensors")));
        using var original = SafetensorsFile.Open(F("weights.safetensors"));
        using var exported = SafetensorsFile.Open(dir.Combine("timm", "model.safetensors"));
        Assert.Equal(original.Entries.Select(e => e.Name).Order(), exported.Entries.Select(e => e.Name).Order());
        foreach (var entry in original.Entries) Assert.Equal(original.ReadFloat32(entry.Name), exported.ReadFloat32(entry.Name));
    }

    [Fact]
    public async Task A_wrapped_pth_imports_from_the_command_line_and_says_what_it_left_out()
    {
        using var dir = new TemporaryDirectory();
        string pth = RepositoryFiles.PathOf("tests", "fixtures", "checkpoints", "beit_unilm.pth");
        var import = await CliHarness.RunAsync("model", "import", "--from", "unilm-beit", "--weights", pth, "--out", dir.Combine("model"));
        Assert.True(import.ExitCode == 0, import.Error);
        Assert.Contains("from pytorch-zip", import.Output);
        Assert.Contains("optimizer", import.Output);
        Assert.Contains("args", import.Output);

        var wrongKey = await CliHarness.RunAsync("model", "import", "--from", "unilm-beit", "--weights", pth, "--state-dict-key", "nope", "--out", dir.Combine("other"));
        Assert.Equal(MimFlow.Cli.MimFlowCli.Failure, wrongKey.ExitCode);
        Assert.Contains("nope", wrongKey.Error);
        Assert.Contains("beit_unilm.pth", wrongKey.Error);
        Assert.False(Directory.Exists(dir.Combine("other")) && Directory.EnumerateFileSystemEntries(dir.Combine("other")).Any());
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

public sealed class HubFolderCommandTests
{
    [Fact]
    public async Task Hf_folders_import_with_labels_and_left_out_heads_and_export_to_a_timm_hub_folder()
    {
        using var dir = new TemporaryDirectory();
        var schemes = await CliHarness.RunAsync("model", "import", "--from", "hf-nothing", "--weights", "x", "--out", dir.Combine("x"));
        Assert.NotEqual(0, schemes.ExitCode);
        foreach (string scheme in new[] { "hf-beit", "hf-clip", "hf-vit" }) Assert.Contains(scheme, schemes.Error);

        MimFlow.Torch.Backend.TorchBackend.EnsureLoaded();
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            var timm = Models.HuggingFaceNaming.Read(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "weights.safetensors"));
            Directory.CreateDirectory(dir.Combine("hf"));
            Models.HuggingFaceNaming.Write(dir.Combine("hf", "model.safetensors"), Models.HuggingFaceNaming.Beit(timm, prefix: "data2vec_vision."));
            Models.HuggingFaceNaming.WriteJson(dir.Combine("hf", "config.json"), new Dictionary<string, object>
            {
                ["model_type"] = "data2vec-vision", ["hidden_size"] = 192, ["num_hidden_layers"] = 3, ["num_attention_heads"] = 3,
                ["intermediate_size"] = 768, ["use_relative_position_bias"] = true, ["layer_norm_eps"] = 1e-6,
                ["id2label"] = Enumerable.Range(0, 10).ToDictionary(i => i.ToString(), i => $"n{i}"),
            });
        }
        var import = await CliHarness.RunAsync("model", "import", "--from", "hf-beit", "--weights", dir.Combine("hf"), "--out", dir.Combine("model"));
        Assert.True(import.ExitCode == 0, import.Error);
        Assert.Contains("10 label names in labels.json", import.Output);
        Assert.Contains("left out 3 entries", import.Output);

        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", dir.Combine("model"), "--out", dir.Combine("hub"));
        Assert.True(export.ExitCode == 0, export.Error);
        Assert.Contains("as beit_base_patch16_224", export.Output);
        var forward = await CliHarness.RunAsync("model", "forward", "--model", dir.Combine("hub"), "--input", SharedFixtures.PathOf("timm", "beit_tiny_relpos", "input.safetensors"),
            "--output", dir.Combine("y.safetensors"));
        Assert.Equal(1, forward.ExitCode);
        Assert.Contains("--from timm --weights", forward.Error);
        var again = await CliHarness.RunAsync("model", "import", "--from", "timm", "--weights", dir.Combine("hub"), "--out", dir.Combine("again"));
        Assert.True(again.ExitCode == 0, again.Error);
        Assert.Contains("from beit_base_patch16_224 (safetensors)", again.Output);
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("again", "weights.safetensors")));
        Assert.Equal(File.ReadAllText(dir.Combine("model", "labels.json")), File.ReadAllText(dir.Combine("again", "labels.json")));
    }
}

public sealed class ModelInitTests
{
    [Fact]
    public async Task Init_is_seeded_follows_the_architecture_table_and_loads_back()
    {
        using var dir = new TemporaryDirectory();
        var first = await CliHarness.RunAsync("model", "init", "--arch", "beit-tiny", "--out", dir.Combine("a"), "--seed", "3");
        Assert.True(first.ExitCode == 0, first.Error);
        await CliHarness.RunAsync("model", "init", "--arch", "beit-tiny", "--out", dir.Combine("b"), "--seed", "3");
        await CliHarness.RunAsync("model", "init", "--arch", "beit-tiny", "--out", dir.Combine("c"), "--seed", "4");
        Assert.Equal(File.ReadAllBytes(dir.Combine("a", "weights.safetensors")), File.ReadAllBytes(dir.Combine("b", "weights.safetensors")));
        Assert.NotEqual(File.ReadAllBytes(dir.Combine("a", "weights.safetensors")), File.ReadAllBytes(dir.Combine("c", "weights.safetensors")));

        using var weights = SafetensorsFile.Open(dir.Combine("a", "weights.safetensors"));
        Assert.Equal(new long[] { 576, 192 }, weights["blocks.11.attn.qkv.weight"].Shape);
        Assert.Equal(new long[] { RelativeRows(14), 3 }, weights["blocks.0.attn.relative_position_bias_table"].Shape);
        Assert.True(weights.Contains("mask_token"));
        float[] qkv = weights.ReadFloat32("blocks.0.attn.qkv.weight");
        double std = Math.Sqrt(qkv.Average(v => (double)v * v));
        Assert.InRange(std, 0.016, 0.019);
        Assert.All(qkv, v => Assert.InRange(v, -0.04f, 0.04f));
        Assert.All(weights.ReadFloat32("blocks.3.gamma_1"), v => Assert.Equal(0.1f, v));
        double fc2Layer1 = Math.Sqrt(weights.ReadFloat32("blocks.0.mlp.fc2.weight").Average(v => (double)v * v));
        double fc2Layer4 = Math.Sqrt(weights.ReadFloat32("blocks.3.mlp.fc2.weight").Average(v => (double)v * v));
        Assert.InRange(fc2Layer1 / fc2Layer4, 1.8, 2.2);

        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", dir.Combine("a"), "--out", dir.Combine("timm"));
        Assert.True(export.ExitCode == 0, export.Error);
        using (var exported = SafetensorsFile.Open(dir.Combine("timm", "model.safetensors")))
        {
            Assert.False(exported.Contains("mask_token"), "timm's Beit has no mask_token: strict loading would fail");
            Assert.Equal(weights.Entries.Count - 1, exported.Entries.Count);
        }
        var bad = await CliHarness.RunAsync("model", "init", "--arch", "resnet-50", "--out", dir.Combine("x"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("beit-base", bad.Error);
    }

    private static long RelativeRows(int grid) => (2 * grid - 1) * (2 * grid - 1) + 3;

    [Fact]
    public async Task Tokenizers_and_teachers_initialise_and_a_vqkd_directory_writes_codes()
    {
        using var dir = new TemporaryDirectory();
        var init = await CliHarness.RunAsync("model", "init", "--arch", "vqkd-tiny", "--out", dir.Combine("vqkd"), "--seed", "1");
        Assert.True(init.ExitCode == 0, init.Error);
        using (var weights = SafetensorsFile.Open(dir.Combine("vqkd", "weights.safetensors")))
        {
            Assert.Equal(new long[] { 8192, 32 }, weights["quantize.embedding.weight"].Shape);
            float[] code = weights.ReadFloat32("quantize.embedding.weight")[..32];
            Assert.Equal(1.0, Math.Sqrt(code.Sum(v => (double)v * v)), 1e-5);
            Assert.True(weights.Contains("encoder.pos_embed") && weights.Contains("decoder.blocks.2.attn.q_bias"));
        }
        var dino = await CliHarness.RunAsync("model", "init", "--arch", "dino-s16", "--out", dir.Combine("dino"));
        Assert.True(dino.ExitCode == 0, dino.Error);

        var input = new SafetensorsWriter();
        input.AddFloat32("pixel_values", [2, 3, 224, 224], new float[2 * 3 * 224 * 224]);
        input.Write(dir.Combine("x.safetensors"));
        var forward = await CliHarness.RunAsync("model", "forward", "--model", dir.Combine("vqkd"), "--input", dir.Combine("x.safetensors"), "--output", dir.Combine("codes.safetensors"));
        Assert.True(forward.ExitCode == 0, forward.Error);
        using var codes = SafetensorsFile.Open(dir.Combine("codes.safetensors"));
        Assert.Equal(SafetensorsDType.I64, codes["codes"].DType);
        Assert.Equal(new long[] { 2, 196 }, codes["codes"].Shape);
        Assert.All(codes.Read<long>("codes"), c => Assert.InRange(c, 0, 8191));

        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", dir.Combine("vqkd"), "--out", dir.Combine("timm"));
        Assert.Equal(1, export.ExitCode);
        Assert.Contains("not a ViT", export.Error);
    }

    [Fact]
    public async Task Forward_at_another_image_size_resamples_the_positions()
    {
        using var dir = new TemporaryDirectory();
        string F(string name) => SharedFixtures.PathOf("timm", "beit_tiny_relpos", name);
        var import = await CliHarness.RunAsync("model", "import", "--from", "timm", "--config", F("timm_config.json"), "--weights", F("weights.safetensors"),
            "--out", dir.Combine("model"), "--img-size", "256");
        Assert.True(import.ExitCode == 0, import.Error);
        using (var weights = SafetensorsFile.Open(dir.Combine("model", "weights.safetensors")))
            Assert.Equal(new long[] { RelativeRows(16), 3 }, weights["blocks.0.attn.relative_position_bias_table"].Shape);
        var input = new SafetensorsWriter();
        input.AddFloat32("pixel_values", [1, 3, 160, 160], Enumerable.Range(0, 3 * 160 * 160).Select(i => (float)Math.Sin(i * 0.01)).ToArray());
        input.Write(dir.Combine("x.safetensors"));
        var forward = await CliHarness.RunAsync("model", "forward", "--model", dir.Combine("model"), "--input", dir.Combine("x.safetensors"), "--output", dir.Combine("y.safetensors"));
        Assert.True(forward.ExitCode == 0, forward.Error);
        Assert.Contains("resampled to 10×10", forward.Output);
        using var output = SafetensorsFile.Open(dir.Combine("y.safetensors"));
        Assert.Equal(new long[] { 1, 101, 192 }, output["features"].Shape);
        Assert.Equal(new long[] { 1, 10 }, output["logits"].Shape);
    }
}
