using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class TimmParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static double RelativeL2(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.to(float64);
        var e = expected.to(float64);
        return ((a - e).norm().item<double>()) / e.norm().item<double>();
    }

    [Theory]
    [InlineData("beit_tiny_relpos")]
    [InlineData("vit_clip_tiny")]
    public void Features_and_logits_match_timm_within_1e_4(string fixture)
    {
        TorchBackend.EnsureLoaded();
        using var scope = NewDisposeScope();
        var config = TimmConfig.Parse(File.ReadAllText(SharedFixtures.PathOf("timm", fixture, "timm_config.json")), fixture);
        using var model = new VisionTransformer(config);
        model.eval();
        using (var weights = SafetensorsFile.Open(SharedFixtures.PathOf("timm", fixture, "weights.safetensors")))
            WeightLoader.LoadStrict(model, weights);
        using var input = SafetensorsFile.Open(SharedFixtures.PathOf("timm", fixture, "input.safetensors"));
        using var expected = SafetensorsFile.Open(SharedFixtures.PathOf("timm", fixture, "expected.safetensors"));
        using var noGrad = no_grad();
        var features = model.ForwardFeatures(WeightLoader.Read(input, "pixel_values"));
        var logits = model.ForwardHead(features);
        double featureError = RelativeL2(features, WeightLoader.Read(expected, "features"));
        double logitError = RelativeL2(logits, WeightLoader.Read(expected, "logits"));
        output.WriteLine($"{fixture}: features relative L2 {featureError:E2}, logits {logitError:E2}");
        Assert.True(featureError <= 1e-4, $"{fixture}: features relative L2 error {featureError:E2}");
        Assert.True(logitError <= 1e-4, $"{fixture}: logits relative L2 error {logitError:E2}");
    }

    [Fact]
    public void Parameter_names_are_timms()
    {
        TorchBackend.EnsureLoaded();
        using var model = new VisionTransformer(new VitConfig
        {
            EmbedDim = 64, Depth = 2, NumHeads = 2, NumClasses = 5, BeitAttention = true, UseAbsPosEmb = false,
            UseSharedRelPosBias = true, InitValues = 0.1, GlobalPool = "avg", UseMaskToken = true, ImgSize = 32,
        });
        var names = model.state_dict().Keys.ToHashSet();
        foreach (string name in new[] { "patch_embed.proj.weight", "cls_token", "mask_token", "rel_pos_bias.relative_position_bias_table",
                     "blocks.1.attn.q_bias", "blocks.1.attn.v_bias", "blocks.1.gamma_2", "fc_norm.weight", "head.bias" })
            Assert.Contains(name, names);
        Assert.DoesNotContain(names, n => n.Contains("relative_position_index") || n.StartsWith("norm.", StringComparison.Ordinal));
    }

    [Fact]
    public void Mask_token_replaces_exactly_the_masked_patch_embeddings()
    {
        TorchBackend.EnsureLoaded();
        using var scope = NewDisposeScope();
        var config = new VitConfig { ImgSize = 32, PatchSize = 16, EmbedDim = 32, Depth = 1, NumHeads = 2, NumClasses = 0, UseMaskToken = true };
        using var model = new VisionTransformer(config);
        model.eval();
        var pixels = randn(1, 3, 32, 32, generator: new Generator(1));
        var noMask = zeros(1, 4);
        var masked = tensor(new float[] { 0, 1, 0, 0 }).reshape(1, 4);
        using var noGrad = no_grad();
        var plain = model.ForwardFeatures(pixels, noMask);
        Assert.True(allclose(plain, model.ForwardFeatures(pixels)));
        Assert.False(allclose(plain, model.ForwardFeatures(pixels, masked)));
    }

    [Fact]
    public void Vit_layer_scale_has_timms_ls_names_scales_the_branches_and_round_trips_its_config()
    {
        TorchBackend.EnsureLoaded();
        using var scope = NewDisposeScope();
        string json = """{"timm_class": "VisionTransformer", "config": {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 0, "init_values": 1e-5}}""";
        var config = TimmConfig.Parse(json);
        Assert.Equal(1e-5, config.InitValues);
        using var model = new VisionTransformer(config);
        var names = model.state_dict().Keys.ToHashSet();
        Assert.Contains("blocks.1.ls1.gamma", names);
        Assert.Contains("blocks.1.ls2.gamma", names);
        Assert.DoesNotContain(names, n => n.Contains("gamma_1"));
        Assert.Equal(config, TimmConfig.Parse(ModelDirectory.TimmConfigJson(config)));

        Initialization.Apply(model, 1);
        Assert.All(model.state_dict()["blocks.0.ls1.gamma"].data<float>().ToArray(), v => Assert.Equal(1e-5f, v));
        model.eval();
        using var noGrad = no_grad();
        var pixels = randn(1, 3, 32, 32, generator: new Generator(2));
        var scaled = model.ForwardFeatures(pixels);
        foreach (var (name, gamma) in model.named_parameters().Where(p => p.name.EndsWith(".gamma", StringComparison.Ordinal))) gamma.fill_(0);
        // With both branches scaled to zero the blocks are identities: features are the final norm of the embeddings.
        var embeddings = model.ForwardLayers(pixels, null, [0]).Hidden[0];
        Assert.True(allclose(model.ForwardFeatures(pixels), model.FinalNorm(embeddings), 1e-5, 1e-5));
        Assert.False(allclose(scaled, model.ForwardFeatures(pixels), 1e-7, 1e-7));
    }

    [Fact]
    public void Exported_timm_configs_keep_layer_norm_eps_and_no_position_embedding_and_zero_init_values_mean_no_layer_scale()
    {
        var clip = Architectures.Get("clip-b16", numClasses: 512);
        Assert.Equal(clip, TimmConfig.Parse(ModelDirectory.TimmConfigJson(clip)));
        var noPositions = new VitConfig { ImgSize = 32, EmbedDim = 32, Depth = 1, NumHeads = 2, UseAbsPosEmb = false, NumClasses = 0 };
        string json = ModelDirectory.TimmConfigJson(noPositions);
        Assert.Contains("\"pos_embed\": \"none\"", json);
        Assert.Equal(noPositions, TimmConfig.Parse(json));
        foreach (string timmClass in new[] { "Beit", "VisionTransformer" })
            Assert.Null(TimmConfig.Parse("{\"timm_class\": \"" + timmClass + "\", \"config\": {\"init_values\": 0}}").InitValues);
    }
}
