using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;
using static MimFlow.Tests.Models.HuggingFaceCheckpointTests;

namespace MimFlow.Tests.Models;

public sealed class TimmHubTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static string Fixture(string fixture, string name) => SharedFixtures.PathOf("timm", fixture, name);

    /// <summary>A timm hub folder as timm's save_for_hf writes one: config.json (+ model_args) and model.safetensors.</summary>
    private static string HubFolder(TemporaryDirectory dir, string name, string architecture, int classes, int inputSize, object? modelArgs, string weights)
    {
        string folder = dir.Combine(name);
        Directory.CreateDirectory(folder);
        File.Copy(weights, Path.Combine(folder, "model.safetensors"));
        var config = new Dictionary<string, object?>
        {
            ["architecture"] = architecture, ["num_classes"] = classes, ["num_features"] = 192,
            ["pretrained_cfg"] = new Dictionary<string, object>
            {
                ["tag"] = architecture.Contains('.') ? architecture.Split('.')[1] : "", ["input_size"] = new[] { 3, inputSize, inputSize },
                ["fixed_input_size"] = true, ["interpolation"] = "bicubic", ["crop_pct"] = 0.9, ["num_classes"] = classes,
                ["first_conv"] = "patch_embed.proj", ["classifier"] = "head",
            },
        };
        if (modelArgs is not null) config["model_args"] = modelArgs;
        HuggingFaceNaming.WriteJson(Path.Combine(folder, "config.json"), config);
        return folder;
    }

    [Theory]
    // BEiT family: the fixture is beit_base_patch16_224's arguments at tiny width and depth.
    [InlineData("beit_tiny_relpos", "beit_base_patch16_224", 1e-6)]
    // CLIP family: the _quickgelu_ name builds OpenAI's function; its norm_layer fixes eps 1e-5, where the fixture's
    // timm model ran timm's default 1e-6, so the fixture applies only through the network rebuilt at 1e-5.
    [InlineData("vit_clip_tiny", "vit_base_patch16_clip_quickgelu_224.openai", 1e-5)]
    // The exact fixture network as timm builds it: the plain ViT name with pre_norm and quick_gelu in model_args.
    [InlineData("vit_clip_tiny", "vit_base_patch16_224", 1e-6)]
    public void Timm_hub_folders_import_by_architecture_name_and_match_the_fixture(string fixture, string architecture, double eps)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var modelArgs = new Dictionary<string, object> { ["embed_dim"] = 192, ["depth"] = fixture == "beit_tiny_relpos" ? 3 : 2, ["num_heads"] = 3 };
        if (architecture == "vit_base_patch16_224") (modelArgs["pre_norm"], modelArgs["act_layer"]) = (true, "quick_gelu");
        string folder = HubFolder(dir, "hub", architecture, 10, 224, modelArgs, Fixture(fixture, "weights.safetensors"));

        var result = ModelImport.Run(new ModelImportRequest("timm", folder, dir.Combine("model")));
        Assert.Equal(architecture.Split('.')[0], result.SourceArchitecture);
        var timmConfig = TimmConfig.Parse(File.ReadAllText(Fixture(fixture, "timm_config.json")));
        Assert.Equal(timmConfig with { LayerNormEps = eps }, result.Spec.Config);

        var pixels = Input(fixture);
        var (features, logits) = Forward(dir.Combine("model"), pixels);
        double featureError = RelativeL2(features, Expected(fixture, "features")), logitError = RelativeL2(logits!, Expected(fixture, "logits"));
        output.WriteLine($"{architecture} over {fixture}: relative L2 to the fixture features {featureError:E2}, logits {logitError:E2}");
        if (eps == timmConfig.LayerNormEps)
        {
            Assert.True(featureError <= 1e-4 && logitError <= 1e-4, $"{featureError:E2}, {logitError:E2}");
            return;
        }
        // Another eps: the same weights in the fixture's network rebuilt at that eps must be this model exactly.
        var (sameFeatures, sameLogits) = ForwardWith(timmConfig with { LayerNormEps = eps }, Fixture(fixture, "weights.safetensors"), pixels);
        double featureDelta = MaxAbs(features, sameFeatures), logitDelta = MaxAbs(logits!, sameLogits!);
        output.WriteLine($"  vs the fixture's network at eps {eps:E0}: max |Δ| features {featureDelta:E2}, logits {logitDelta:E2}");
        Assert.True(featureDelta <= 1e-6 && logitDelta <= 1e-6, $"{featureDelta:E2}, {logitDelta:E2}");
    }

    [Fact]
    public void Dino_tags_build_the_plain_vit_and_a_dino_folder_imports_exactly()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var config = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 48, Depth = 2, NumHeads = 4, NumClasses = 0 };
        using var original = new VisionTransformer(config);
        Initialization.Apply(original, 9);
        original.eval();
        string weights = dir.Combine("w.safetensors");
        ModelDirectory.WriteWeights(weights, original);
        string folder = HubFolder(dir, "dino", "vit_small_patch16_224.dino", 0, 32,
            new Dictionary<string, object> { ["patch_size"] = 8, ["embed_dim"] = 48, ["depth"] = 2, ["num_heads"] = 4 }, weights);
        var result = ModelImport.Run(new ModelImportRequest("timm", folder, dir.Combine("model")));
        Assert.Equal(config, result.Spec.Config);
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(4));
        var (features, _) = Forward(dir.Combine("model"), pixels);
        Assert.True(features.allclose(original.ForwardFeatures(pixels), 0, 0));
    }

    private static VitConfig Resolve(string name, int classes, int inputSize, Dictionary<string, object?>? modelArgs = null) =>
        TimmArchitectures.Resolve(TimmArchitectures.Get(name, "test"), modelArgs ?? [], new PretrainedDefaults(classes, null, 3, inputSize, true), null, name);

    [Fact]
    public void Registered_names_resolve_to_the_constructor_arguments_of_timms_functions()
    {
        var beitV2 = Resolve("beitv2_base_patch16_224.in1k_ft_in1k", 1000, 224);
        Assert.Equal(new VitConfig
        {
            EmbedDim = 768, Depth = 12, NumHeads = 12, NumClasses = 1000, BeitAttention = true, UseAbsPosEmb = false, UseRelPosBias = true,
            InitValues = 1e-5, GlobalPool = "avg",
        }, beitV2);
        Assert.Equal(0.1, Resolve("beit_base_patch16_224", 1000, 224).InitValues);
        // beit_large_patch16_512 registers img_size=512 itself: the pretrained input size does not override it.
        var large512 = Resolve("beit_large_patch16_512", 1000, 224);
        Assert.Equal((512, 1024, 24, 16, 1e-5), (large512.ImgSize, large512.EmbedDim, large512.Depth, large512.NumHeads, large512.InitValues));

        var openai = Resolve("vit_base_patch16_clip_224.openai", 512, 224);
        Assert.Equal(new VitConfig
        {
            EmbedDim = 768, Depth = 12, NumHeads = 12, NumClasses = 512, PreNorm = true, Activation = Activation.Gelu, LayerNormEps = 1e-5,
        }, openai);
        var quick = Resolve("vit_large_patch14_clip_quickgelu_336.openai", 768, 336);
        Assert.Equal((336, 14, 1024, 24, 16, Activation.QuickGelu, true, 1e-5), (quick.ImgSize, quick.PatchSize, quick.EmbedDim, quick.Depth, quick.NumHeads, quick.Activation, quick.PreNorm, quick.LayerNormEps));
        var b32 = Resolve("vit_base_patch32_clip_224.laion2b", 512, 224);
        Assert.Equal((32, 768, true, 1e-5), (b32.PatchSize, b32.EmbedDim, b32.PreNorm, b32.LayerNormEps));

        var dinoS8 = Resolve("vit_small_patch8_224.dino", 0, 224);
        Assert.Equal(new VitConfig { PatchSize = 8, EmbedDim = 384, Depth = 12, NumHeads = 6, NumClasses = 0 }, dinoS8);
        Assert.Equal((16, 768), (Resolve("vit_base_patch16_224.dino", 0, 224).PatchSize, Resolve("vit_base_patch16_224.dino", 0, 224).EmbedDim));
        var tiny = Resolve("vit_tiny_patch16_224", 1000, 224);
        Assert.Equal((192, 12, 3, 1e-6, "token"), (tiny.EmbedDim, tiny.Depth, tiny.NumHeads, tiny.LayerNormEps, tiny.GlobalPool));
        Assert.Equal(384, Resolve("vit_base_patch16_384", 1000, 384).ImgSize);
        var huge = Resolve("vit_huge_patch14_224", 1000, 224);
        Assert.Equal((14, 1280, 32, 16), (huge.PatchSize, huge.EmbedDim, huge.Depth, huge.NumHeads));
        // model_args override the registered arguments.
        Assert.Equal("token", Resolve("beit_base_patch16_224", 10, 224, new() { ["global_pool"] = "token" }).GlobalPool);
    }

    [Fact]
    public void Unknown_architectures_and_unsupported_model_args_are_refused_by_name()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        string weights = Fixture("beit_tiny_relpos", "weights.safetensors");
        string swin = HubFolder(dir, "swin", "swin_base_patch4_window7_224", 10, 224, null, weights);
        var unknown = Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("timm", swin, dir.Combine("m"))));
        Assert.Contains("swin_base_patch4_window7_224", unknown.Message);
        Assert.Contains(Path.Combine(swin, "config.json"), unknown.Message);
        Assert.Contains("beitv2_large_patch16_224", unknown.Message);
        Assert.Contains("vit_base_patch16_clip_quickgelu_224", unknown.Message);

        string registers = HubFolder(dir, "reg", "vit_base_patch16_224", 10, 224, new Dictionary<string, object> { ["reg_tokens"] = 4 }, weights);
        Assert.Contains("reg_tokens=4", Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("timm", registers, dir.Combine("m")))).Message);
        // A registered name that is not the weights' network: the strict load names what does not match.
        string wrong = HubFolder(dir, "wrong", "vit_tiny_patch16_224", 10, 224, null, weights);
        string mismatch = Assert.Throws<InvalidDataException>(() => ModelImport.Run(new ModelImportRequest("timm", wrong, dir.Combine("m")))).Message;
        Assert.Contains("missing [", mismatch);
        Assert.Contains("q_bias", mismatch);
        Assert.Contains("replaces --config", Assert.Throws<ArgumentException>(() =>
            ModelImport.Run(new ModelImportRequest("timm", wrong, dir.Combine("m")) { Config = Fixture("beit_tiny_relpos", "timm_config.json") })).Message);
    }

    [Theory]
    [InlineData("beit_tiny_relpos", "beit_base_patch16_224", """{"embed_dim":192,"depth":3,"num_heads":3}""")]
    // eps 1e-6 (timm's default): no CLIP name has it, so the nearest plain ViT name carries pre_norm and quick_gelu.
    [InlineData("vit_clip_tiny", "vit_tiny_patch16_224", """{"depth":2,"pre_norm":true,"act_layer":"quick_gelu"}""")]
    public void Export_writes_timms_hub_layout_whose_name_and_model_args_rebuild_the_model_and_import_back_byte_exact(string fixture, string architecture, string modelArgs)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var imported = ModelImport.Run(new ModelImportRequest("timm", Fixture(fixture, "weights.safetensors"), dir.Combine("model"))
        {
            Config = Fixture(fixture, "timm_config.json"),
        });
        var exported = ModelExport.Run(new ModelExportRequest("timm", dir.Combine("model"), dir.Combine("hub")));
        Assert.Equal(architecture, exported.Architecture);
        Assert.Empty(exported.Notes);
        Assert.Equal(["config.json", "model.safetensors", "timm_config.json"], Directory.EnumerateFiles(dir.Combine("hub")).Select(Path.GetFileName).Order());

        var config = JsonNode.Parse(File.ReadAllText(dir.Combine("hub", "config.json")))!.AsObject();
        Assert.Equal(architecture, (string?)config["architecture"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(modelArgs), config["model_args"]), config["model_args"]?.ToJsonString());
        Assert.Equal(10, (int?)config["num_classes"]);
        Assert.Equal("[3,224,224]", config["pretrained_cfg"]!["input_size"]!.ToJsonString());
        Assert.Null(config["mimflow"]);
        // What timm builds from the folder (name + model_args + pretrained_cfg) is the model's configuration.
        using (var document = JsonDocument.Parse(modelArgs))
            Assert.Equal(imported.Spec.Config, TimmArchitectures.Resolve(TimmArchitectures.Get(architecture, "test"),
                TimmConfig.ArgumentsFromJson(document.RootElement, "test"), new PretrainedDefaults(10, null, 3, 224, true), null, "test"));

        var again = ModelImport.Run(new ModelImportRequest("timm", dir.Combine("hub"), dir.Combine("again")));
        Assert.Equal(imported.Spec.Config, again.Spec.Config);
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("again", "weights.safetensors")));
        // timm_config.json stays for Beit(**config) / VisionTransformer(**config) and the --config route.
        Assert.Equal(imported.Spec.Config, TimmConfig.Parse(File.ReadAllText(dir.Combine("hub", "timm_config.json"))));
    }

    [Fact]
    public void Export_picks_the_registered_name_whose_arguments_the_model_has()
    {
        (string, string) Chosen(VitConfig config)
        {
            var (architecture, modelArgs) = TimmArchitectures.Choose(config);
            return (architecture.Name, JsonSerializer.Serialize(modelArgs));
        }
        Assert.Equal(("beit_base_patch16_224", "{}"), Chosen(Architectures.Get("beit-base", 1000)));
        Assert.Equal(("beit_large_patch16_512", "{}"), Chosen(Architectures.Get("beit-large", 1000) with { ImgSize = 512 }));
        Assert.Equal(("beitv2_base_patch16_224", "{}"), Chosen(Architectures.Get("beit-base", 1000) with { InitValues = 1e-5 }));
        Assert.Equal(("vit_base_patch16_clip_quickgelu_224", "{}"), Chosen(Architectures.Get("clip-b16", 512)));
        Assert.Equal(("vit_small_patch16_224", "{}"), Chosen(Architectures.Get("dino-s16")));
        Assert.Equal(("vit_large_patch16_224", "{}"), Chosen(Architectures.Get("vit-large", 1000)));
        Assert.Equal(("vit_base_patch16_384", "{}"), Chosen(Architectures.Get("vit-base", 1000) with { ImgSize = 384 }));
        Assert.Equal(("beit_base_patch16_224", """{"global_pool":"token"}"""), Chosen(Architectures.Get("beit-base", 1000) with { GlobalPool = "token" }));
    }

    [Fact]
    public void Export_keeps_what_timm_cannot_take_beside_it_and_labels_round_trip()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        // transformers' BEiT eps (1e-12) is not an argument timm takes: config.json keeps it under "mimflow".
        var hf = HuggingFaceNaming.Beit(HuggingFaceNaming.Read(Fixture("beit_tiny_relpos", "weights.safetensors")));
        Directory.CreateDirectory(dir.Combine("hf"));
        HuggingFaceNaming.Write(dir.Combine("hf", "model.safetensors"), hf);
        string[] labels = [.. Enumerable.Range(0, 10).Select(i => $"label {i}")];
        HuggingFaceNaming.WriteJson(dir.Combine("hf", "config.json"), new Dictionary<string, object>
        {
            ["model_type"] = "beit", ["hidden_size"] = 192, ["num_hidden_layers"] = 3, ["num_attention_heads"] = 3, ["intermediate_size"] = 768,
            ["use_relative_position_bias"] = true, ["id2label"] = labels.Select((l, i) => (l, i)).ToDictionary(p => p.i.ToString(), p => p.l),
        });
        var imported = ModelImport.Run(new ModelImportRequest("hf-beit", dir.Combine("hf"), dir.Combine("model")));
        Assert.Equal(1e-12, imported.Spec.Config!.LayerNormEps);

        var exported = ModelExport.Run(new ModelExportRequest("timm", dir.Combine("model"), dir.Combine("hub")));
        Assert.Contains(exported.Notes, n => n.Contains("1E-12", StringComparison.OrdinalIgnoreCase) && n.Contains("mimflow"));
        var config = JsonNode.Parse(File.ReadAllText(dir.Combine("hub", "config.json")))!.AsObject();
        Assert.Equal(1e-12, (double?)config["mimflow"]!["layer_norm_eps"]);
        Assert.Equal(labels, config["label_names"]!.AsArray().Select(n => (string)n!));

        var again = ModelImport.Run(new ModelImportRequest("timm", dir.Combine("hub"), dir.Combine("again")));
        Assert.Equal(imported.Spec.Config, again.Spec.Config);
        Assert.Equal(labels, ModelDirectory.ReadLabels(dir.Combine("again")));
        Assert.Equal(File.ReadAllBytes(dir.Combine("model", "weights.safetensors")), File.ReadAllBytes(dir.Combine("again", "weights.safetensors")));
    }
}
