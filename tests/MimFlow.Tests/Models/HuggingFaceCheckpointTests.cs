using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class HuggingFaceCheckpointTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string[] TenLabels = [.. Enumerable.Range(0, 10).Select(i => $"class {i}")];

    private static string Fixture(string fixture, string name) => SharedFixtures.PathOf("timm", fixture, name);

    internal static double RelativeL2(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.to(float64);
        var e = expected.to(float64);
        return (a - e).norm().item<double>() / e.norm().item<double>();
    }

    internal static double MaxAbs(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(float64) - b.to(float64)).abs().max().item<double>();
    }

    /// <summary>features and logits of a model directory on the fixture's input.</summary>
    internal static (Tensor Features, Tensor? Logits) Forward(string modelDirectory, Tensor pixels)
    {
        var (_, model) = ModelDirectory.LoadVit(modelDirectory);
        using (model)
        using (no_grad())
        {
            model.eval();
            var features = model.ForwardFeatures(pixels);
            return (features, model.Config.NumClasses > 0 ? model.ForwardHead(features) : null);
        }
    }

    internal static Tensor Input(string fixture)
    {
        using var input = SafetensorsFile.Open(Fixture(fixture, "input.safetensors"));
        return WeightLoader.Read(input, "pixel_values");
    }

    internal static Tensor Expected(string fixture, string name)
    {
        using var expected = SafetensorsFile.Open(Fixture(fixture, "expected.safetensors"));
        return WeightLoader.Read(expected, name);
    }

    /// <summary>A ViT of <paramref name="config"/> with timm-named weights loaded strictly, on <paramref name="pixels"/>.</summary>
    internal static (Tensor Features, Tensor? Logits) ForwardWith(VitConfig config, string timmWeights, Tensor pixels)
    {
        using var model = new VisionTransformer(config);
        using (var weights = SafetensorsFile.Open(timmWeights)) WeightLoader.LoadStrict(model, weights);
        model.eval();
        using var noGrad = no_grad();
        var features = model.ForwardFeatures(pixels);
        return (features, config.NumClasses > 0 ? model.ForwardHead(features) : null);
    }

    /// <summary>The fixture imported under its own timm names (the legacy timm_config.json route).</summary>
    private static string ImportTimm(TemporaryDirectory dir, string fixture, string? weights = null)
    {
        string target = dir.Combine("timm-" + fixture);
        ModelImport.Run(new ModelImportRequest("timm", weights ?? Fixture(fixture, "weights.safetensors"), target) { Config = Fixture(fixture, "timm_config.json") });
        return target;
    }

    private static object BeitConfigJson(double eps) => new Dictionary<string, object>
    {
        ["architectures"] = new[] { "BeitForImageClassification" }, ["model_type"] = "beit",
        ["hidden_size"] = 192, ["num_hidden_layers"] = 3, ["num_attention_heads"] = 3, ["intermediate_size"] = 768,
        ["hidden_act"] = "gelu", ["layer_norm_eps"] = eps, ["image_size"] = 224, ["patch_size"] = 16, ["num_channels"] = 3,
        ["use_mask_token"] = false, ["use_absolute_position_embeddings"] = false, ["use_relative_position_bias"] = true,
        ["use_shared_relative_position_bias"] = false, ["layer_scale_init_value"] = 0.1, ["use_mean_pooling"] = true,
        ["id2label"] = TenLabels.Select((l, i) => (l, i)).ToDictionary(p => p.i.ToString(), p => p.l),
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Hf_beit_classifier_forwards_as_the_timm_fixture_and_as_its_timm_named_import(bool hubFolder)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        const string fixture = "beit_tiny_relpos";
        var hf = HuggingFaceNaming.Beit(HuggingFaceNaming.Read(Fixture(fixture, "weights.safetensors")));
        string weights;
        if (hubFolder)
        {
            Directory.CreateDirectory(dir.Combine("hub"));
            HuggingFaceNaming.Write(dir.Combine("hub", "model.safetensors"), hf);
            // The fixture's timm model normalises with timm's eps 1e-6; transformers' BEiT default would be 1e-12.
            HuggingFaceNaming.WriteJson(dir.Combine("hub", "config.json"), BeitConfigJson(1e-6));
            weights = dir.Combine("hub");
        }
        else
        {
            weights = dir.Combine("beit.safetensors");
            HuggingFaceNaming.Write(weights, hf);
        }

        var result = ModelImport.Run(new ModelImportRequest("hf-beit", weights, dir.Combine("model")));
        Assert.Equal(3, result.LeftOut.Count(n => n.EndsWith("relative_position_index", StringComparison.Ordinal)));
        Assert.Equal(3, result.LeftOut.Count);
        var config = result.Spec.Config!;
        Assert.Equal(hubFolder ? 1e-6 : 1e-12, config.LayerNormEps);
        Assert.Equal(("avg", 3, 10, 0.1), (config.GlobalPool, config.NumHeads, config.NumClasses, config.InitValues));
        Assert.Equal(hubFolder ? TenLabels : null, ModelDirectory.ReadLabels(dir.Combine("model")));

        var pixels = Input(fixture);
        var (features, logits) = Forward(dir.Combine("model"), pixels);
        double featureError = RelativeL2(features, Expected(fixture, "features")), logitError = RelativeL2(logits!, Expected(fixture, "logits"));
        // The same weights under timm names, in a network of the same eps (a lone file runs transformers' 1e-12).
        var timmConfig = ModelDirectory.ReadSpec(ImportTimm(dir, fixture)).Config! with { LayerNormEps = config.LayerNormEps };
        var (timmFeatures, timmLogits) = ForwardWith(timmConfig, Fixture(fixture, "weights.safetensors"), pixels);
        double sameFeatures = MaxAbs(features, timmFeatures), sameLogits = MaxAbs(logits!, timmLogits!);
        output.WriteLine($"hf-beit ({(hubFolder ? "hub folder, eps 1e-6" : "lone file, eps 1e-12")}): vs timm expected relative L2 features {featureError:E2}, logits {logitError:E2}; " +
                         $"vs timm-named import max |Δ| features {sameFeatures:E2}, logits {sameLogits:E2}");
        Assert.True(featureError <= 1e-4 && logitError <= 1e-4, $"vs fixture: {featureError:E2}, {logitError:E2}");
        Assert.True(sameFeatures <= 1e-6 && sameLogits <= 1e-6, $"vs timm names: {sameFeatures:E2}, {sameLogits:E2}");
    }

    [Fact]
    public void Hf_beit_masked_image_model_keeps_its_final_norm_and_mask_token_and_leaves_out_lm_head()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var config = new VitConfig
        {
            ImgSize = 32, PatchSize = 8, EmbedDim = 48, Depth = 2, NumHeads = 4, BeitAttention = true, UseAbsPosEmb = false,
            UseSharedRelPosBias = true, InitValues = 0.1, UseMaskToken = true, GlobalPool = "token", NumClasses = 0,
        };
        using var original = new VisionTransformer(config);
        Initialization.Apply(original, 11);
        original.eval();
        var timm = original.state_dict().ToDictionary(p => p.Key, p => p.Value);
        string path = dir.Combine("mim.safetensors");
        HuggingFaceNaming.Write(path, HuggingFaceNaming.Beit(timm, masked: true));

        using var file = SafetensorsFile.Open(path);
        var checkpoint = ForeignCheckpoints.Read("hf-beit", new SafetensorsTensors(file));
        Assert.Equal(config with { LayerNormEps = 1e-12 }, checkpoint.Spec.Config);
        Assert.Equal(["lm_head.bias", "lm_head.weight"], checkpoint.LeftOut.Order());
        using var imported = new VisionTransformer(checkpoint.Spec.Config! with { LayerNormEps = config.LayerNormEps });
        WeightLoader.LoadStrict(imported, checkpoint.Tensors);
        imported.eval();
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(1));
        var mask = (rand(2, 16, generator: new Generator(2)) > 0.5).to(float32);
        Assert.True(original.ForwardFeatures(pixels, mask).allclose(imported.ForwardFeatures(pixels, mask), 0, 0), "the same weights under transformers' MIM names");
    }

    private static object ClipConfigJson(double eps) => new Dictionary<string, object>
    {
        ["architectures"] = new[] { "CLIPModel" }, ["model_type"] = "clip", ["projection_dim"] = 10,
        ["text_config"] = new Dictionary<string, object> { ["hidden_size"] = 4 },
        // transformers writes only what differs from CLIPVisionConfig's defaults (patch 32, quick_gelu, eps 1e-5, …).
        ["vision_config"] = new Dictionary<string, object>
        {
            ["hidden_size"] = 192, ["intermediate_size"] = 768, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 3, ["patch_size"] = 16,
            ["layer_norm_eps"] = eps,
        },
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Hf_clip_vision_tower_gives_timms_features_and_transformers_pooled_output_and_image_embeds(bool hubFolder)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        const string fixture = "vit_clip_tiny";
        var timm = HuggingFaceNaming.Read(Fixture(fixture, "weights.safetensors"));
        // visual_projection has no bias: the same weights under timm names have a zero head.bias.
        var headBias = timm["head.bias"];
        timm["head.bias"] = zeros_like(headBias);
        var hf = HuggingFaceNaming.Clip(timm);
        string weights;
        if (hubFolder)
        {
            Directory.CreateDirectory(dir.Combine("hub"));
            HuggingFaceNaming.Write(dir.Combine("hub", "model.safetensors"), hf);
            HuggingFaceNaming.WriteJson(dir.Combine("hub", "config.json"), ClipConfigJson(1e-6));
            weights = dir.Combine("hub");
        }
        else
        {
            weights = dir.Combine("clip.safetensors");
            HuggingFaceNaming.Write(weights, hf);
        }

        var result = ModelImport.Run(new ModelImportRequest("hf-clip", weights, dir.Combine("model")));
        var config = result.Spec.Config!;
        Assert.Equal((true, Activation.QuickGelu, hubFolder ? 1e-6 : 1e-5, 3, 10), (config.PreNorm, config.Activation, config.LayerNormEps, config.NumHeads, config.NumClasses));
        Assert.Contains("logit_scale", result.LeftOut);
        Assert.Contains("text_projection.weight", result.LeftOut);
        Assert.Contains("vision_model.embeddings.position_ids", result.LeftOut);

        var pixels = Input(fixture);
        var (features, logits) = Forward(dir.Combine("model"), pixels);
        // timm's features apply the final norm (transformers' post_layernorm) to every token, as OpenAI's ln_post does.
        double featureError = RelativeL2(features, Expected(fixture, "features"));
        double logitError = RelativeL2(logits!, Expected(fixture, "logits") - headBias);

        // transformers' semantics, computed here from the HF tensors: last_hidden_state is the last block's output
        // before post_layernorm; pooler_output = post_layernorm(last_hidden_state[:, 0]); image_embeds = pooled · Wᵀ.
        var (_, model) = ModelDirectory.LoadVit(dir.Combine("model"));
        Tensor lastHidden;
        using (model)
        using (no_grad())
        {
            model.eval();
            lastHidden = model.ForwardLayers(pixels, null, [config.Depth - 1]).Hidden[config.Depth - 1];
        }
        var named = hf.ToDictionary(p => p.Item1, p => p.Item2);
        var pooled = nn.functional.layer_norm(lastHidden[.., 0], [192], named["vision_model.post_layernorm.weight"], named["vision_model.post_layernorm.bias"], config.LayerNormEps);
        var imageEmbeds = pooled.matmul(named["visual_projection.weight"].t());
        double poolerError = MaxAbs(features[.., 0], pooled), embedsError = MaxAbs(logits!, imageEmbeds);

        var timmConfig = ModelDirectory.ReadSpec(ImportTimm(dir, fixture)).Config! with { LayerNormEps = config.LayerNormEps };
        var (timmFeatures, timmLogits) = ForwardWith(timmConfig, WriteTimm(dir, timm), pixels);
        double sameFeatures = MaxAbs(features, timmFeatures), sameLogits = MaxAbs(logits!, timmLogits!);
        output.WriteLine($"hf-clip ({(hubFolder ? "hub folder, eps 1e-6" : "lone file, eps 1e-5")}): vs timm expected relative L2 features {featureError:E2}, " +
                         $"logits − head.bias {logitError:E2}; pooler_output {poolerError:E2}, image_embeds {embedsError:E2}; vs timm names {sameFeatures:E2}, {sameLogits:E2}");
        // The fixture ran timm's eps 1e-6: it applies where config.json says so; transformers' CLIP default is 1e-5.
        if (hubFolder) Assert.True(featureError <= 1e-4 && logitError <= 1e-4, $"vs fixture: {featureError:E2}, {logitError:E2}");
        Assert.True(poolerError <= 1e-5 && embedsError <= 1e-5, $"transformers' pooled outputs: {poolerError:E2}, {embedsError:E2}");
        Assert.True(sameFeatures <= 1e-6 && sameLogits <= 1e-6, $"vs timm names: {sameFeatures:E2}, {sameLogits:E2}");
    }

    private static string WriteTimm(TemporaryDirectory dir, IReadOnlyDictionary<string, Tensor> timm)
    {
        string path = dir.Combine("timm-zero-bias.safetensors");
        HuggingFaceNaming.Write(path, timm.Select(p => (p.Key, p.Value)));
        return path;
    }

    private static VitConfig PlainVit => new() { ImgSize = 32, PatchSize = 8, EmbedDim = 48, Depth = 2, NumHeads = 4, NumClasses = 5 };

    private static object VitConfigJson(VitConfig config, IReadOnlyDictionary<string, object>? overrides = null)
    {
        var json = new Dictionary<string, object>
        {
            ["architectures"] = new[] { "ViTForImageClassification" }, ["model_type"] = "vit",
            ["hidden_size"] = config.EmbedDim, ["num_hidden_layers"] = config.Depth, ["num_attention_heads"] = config.NumHeads,
            ["intermediate_size"] = (int)(config.EmbedDim * config.MlpRatio), ["hidden_act"] = "gelu", ["layer_norm_eps"] = config.LayerNormEps,
            ["image_size"] = config.ImgSize, ["patch_size"] = config.PatchSize, ["num_channels"] = 3, ["qkv_bias"] = true,
            ["id2label"] = Enumerable.Range(0, config.NumClasses).ToDictionary(i => i.ToString(), i => $"kind {i}"),
        };
        foreach (var (key, value) in overrides ?? new Dictionary<string, object>()) json[key] = value;
        return json;
    }

    private static VisionTransformer Seeded(VitConfig config, long seed)
    {
        var model = new VisionTransformer(config);
        Initialization.Apply(model, seed);
        model.eval();
        return model;
    }

    [Fact]
    public void Hf_vit_classifier_and_dino_base_model_import_as_the_plain_vit_they_were_made_from()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        using var original = Seeded(PlainVit, 21);
        var timm = original.state_dict().ToDictionary(p => p.Key, p => p.Value);
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(3));
        var expectedFeatures = original.ForwardFeatures(pixels);
        var expectedLogits = original.ForwardHead(expectedFeatures);

        // ViTForImageClassification as a hub folder: config.json's eps (timm's 1e-6 here) and labels are used.
        Directory.CreateDirectory(dir.Combine("vit"));
        HuggingFaceNaming.Write(dir.Combine("vit", "model.safetensors"), HuggingFaceNaming.Vit(timm));
        HuggingFaceNaming.WriteJson(dir.Combine("vit", "config.json"), VitConfigJson(PlainVit));
        var vit = ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("vit"), dir.Combine("vit-model")));
        Assert.Equal(PlainVit, vit.Spec.Config);
        Assert.Equal(5, ModelDirectory.ReadLabels(dir.Combine("vit-model"))!.Count);
        var (features, logits) = Forward(dir.Combine("vit-model"), pixels);
        double featureError = MaxAbs(features, expectedFeatures), logitError = MaxAbs(logits!, expectedLogits);

        // DINO on the hub: ViTModel without the vit. prefix, with a (random, unused) tanh pooler; a lone file needs
        // --heads for a non-standard width and takes transformers' ViT eps 1e-12.
        var dino = timm.Where(p => !p.Key.StartsWith("head.", StringComparison.Ordinal)).ToDictionary(p => p.Key, p => p.Value);
        HuggingFaceNaming.Write(dir.Combine("dino.safetensors"), HuggingFaceNaming.Vit(dino, prefix: "", pooler: true));
        Assert.Contains("--heads", Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("dino.safetensors"), dir.Combine("x")))).Message);
        var dinoResult = ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("dino.safetensors"), dir.Combine("dino-model")) { Heads = 4 });
        Assert.Equal(PlainVit with { NumClasses = 0, LayerNormEps = 1e-12 }, dinoResult.Spec.Config);
        Assert.Equal(["pooler.dense.bias", "pooler.dense.weight"], dinoResult.LeftOut.Order());
        var (dinoFeatures, _) = Forward(dir.Combine("dino-model"), pixels);
        // The same weights under timm names in a network of transformers' eps (1e-12: at this tiny random init it moves
        // features by ~1e-3 against timm's 1e-6, so the eps is part of what is compared).
        string dinoTimm = dir.Combine("dino-timm.safetensors");
        HuggingFaceNaming.Write(dinoTimm, dino.Select(p => (p.Key, p.Value)));
        var (dinoExpected, _) = ForwardWith(PlainVit with { NumClasses = 0, LayerNormEps = 1e-12 }, dinoTimm, pixels);
        double dinoError = MaxAbs(dinoFeatures, dinoExpected), epsEffect = MaxAbs(dinoFeatures, expectedFeatures);
        output.WriteLine($"hf-vit vs the timm-named original: max |Δ| features {featureError:E2}, logits {logitError:E2}; " +
                         $"DINO layout vs timm names at eps 1e-12 {dinoError:E2} (vs eps 1e-6: {epsEffect:E2})");
        Assert.True(featureError <= 1e-6 && logitError <= 1e-6, $"{featureError:E2}, {logitError:E2}");
        Assert.True(dinoError <= 1e-6, $"{dinoError:E2}");
    }

    [Fact]
    public void Config_json_fields_are_read_and_a_disagreement_with_the_tensors_names_the_file_and_field()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        using var original = Seeded(PlainVit, 5);
        var hf = HuggingFaceNaming.Vit(original.state_dict().ToDictionary(p => p.Key, p => p.Value));
        Directory.CreateDirectory(dir.Combine("hub"));
        HuggingFaceNaming.Write(dir.Combine("hub", "model.safetensors"), hf);
        string configPath = dir.Combine("hub", "config.json");
        ModelImportResult Import(IReadOnlyDictionary<string, object>? overrides = null, IReadOnlyCollection<string>? drop = null)
        {
            var json = (Dictionary<string, object>)VitConfigJson(PlainVit, overrides);
            foreach (string key in drop ?? []) json.Remove(key);
            HuggingFaceNaming.WriteJson(configPath, json);
            return ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("hub"), dir.Combine("model")));
        }
        string Refused(IReadOnlyDictionary<string, object>? overrides = null, IReadOnlyCollection<string>? drop = null)
        {
            string message = Assert.Throws<InvalidDataException>(() => Import(overrides, drop)).Message;
            Assert.Contains(configPath, message);
            return message;
        }

        var read = Import(new Dictionary<string, object> { ["hidden_act"] = "quick_gelu", ["layer_norm_eps"] = 1e-5 });
        Assert.Equal((Activation.QuickGelu, 1e-5), (read.Spec.Config!.Activation, read.Spec.Config.LayerNormEps));
        Assert.Equal([.. Enumerable.Range(0, 5).Select(i => $"kind {i}")], read.Labels);

        string width = Refused(new Dictionary<string, object> { ["hidden_size"] = 64 });
        Assert.Contains("hidden_size is 64", width);
        Assert.Contains("48", width);
        // A field config.json leaves out is transformers' default (patch 16 for ViT), which these patch-8 weights contradict.
        string patch = Refused(drop: ["patch_size"]);
        Assert.Contains("patch_size is 16 (transformers' default", patch);
        Assert.Contains("id2label", Refused(new Dictionary<string, object> { ["id2label"] = new Dictionary<string, string> { ["0"] = "a", ["1"] = "b" } }));
        Assert.Contains("hidden_act 'gelu_new'", Refused(new Dictionary<string, object> { ["hidden_act"] = "gelu_new" }));
        Assert.Contains("qkv_bias", Refused(new Dictionary<string, object> { ["qkv_bias"] = false }));
        Assert.Contains("model_type 'clip'", Refused(new Dictionary<string, object> { ["model_type"] = "clip" }));

        // BEiT: the relative position table tells the heads, so config.json must agree with it.
        var beit = HuggingFaceNaming.Beit(HuggingFaceNaming.Read(Fixture("beit_tiny_relpos", "weights.safetensors")));
        Directory.CreateDirectory(dir.Combine("beit"));
        HuggingFaceNaming.Write(dir.Combine("beit", "model.safetensors"), beit);
        var beitJson = (Dictionary<string, object>)BeitConfigJson(1e-6);
        beitJson["num_attention_heads"] = 4;
        HuggingFaceNaming.WriteJson(dir.Combine("beit", "config.json"), beitJson);
        string heads = Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("hf-beit", dir.Combine("beit"), dir.Combine("m")))).Message;
        Assert.Contains("num_attention_heads is 4", heads);
        Assert.Contains("relative_position_bias_table", heads);
    }

    [Fact]
    public void Unknown_tensors_in_an_hf_checkpoint_are_an_error_naming_them()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var hf = HuggingFaceNaming.Beit(HuggingFaceNaming.Read(Fixture("beit_tiny_relpos", "weights.safetensors")));
        hf.Add(("beit.encoder.layer.0.adapter.weight", zeros(2)));
        string path = dir.Combine("odd.safetensors");
        HuggingFaceNaming.Write(path, hf);
        var error = Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("hf-beit", path, dir.Combine("m"))));
        Assert.Contains("beit.encoder.layer.0.adapter.weight", error.Message);
        Assert.Contains(path, error.Message);
        // A CLIP checkpoint is not a BEiT one: the error says which names were looked for.
        string clip = dir.Combine("clip.safetensors");
        HuggingFaceNaming.Write(clip, HuggingFaceNaming.Clip(HuggingFaceNaming.Read(Fixture("vit_clip_tiny", "weights.safetensors"))));
        Assert.Contains("beit.embeddings.patch_embeddings.projection.weight",
            Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("hf-beit", clip, dir.Combine("m")))).Message);
    }
}
