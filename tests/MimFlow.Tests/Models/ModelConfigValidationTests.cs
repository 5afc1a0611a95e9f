using System.Diagnostics;
using System.Text.Json.Nodes;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

/// <summary>
/// Every configuration read from disk is checked before anything is built: each value against its bounds, every
/// field known and present, and the sizes against the shapes the weights file holds. A refusal is one
/// InvalidDataException naming the file and the field.
/// </summary>
public sealed class ModelConfigValidationTests
{
    private static string Refusal(Action load)
    {
        var error = Record.Exception(load);
        Assert.NotNull(error);
        Assert.True(error is InvalidDataException, $"{error.GetType().Name}: {error.Message}");
        return error.Message;
    }

    [Theory]
    [InlineData("vit", "config.num_heads", "0")]
    [InlineData("vit", "config.patch_size", "0")]
    [InlineData("vit", "config.patch_size", "5")]
    [InlineData("vit", "config.embed_dim", "-16")]
    [InlineData("vit", "config.depth", "-1")]
    [InlineData("vit", "config.img_size", "100000")]
    [InlineData("vit", "config.in_channels", "0")]
    [InlineData("vit", "config.mlp_ratio", "0")]
    [InlineData("vit", "config.num_classes", "-3")]
    [InlineData("vit", "config.layer_norm_eps", "0")]
    [InlineData("vit", "config.drop_path_rate", "1.5")]
    [InlineData("vit", "config.global_pool", "\"max\"")]
    [InlineData("vit", "config.depth", "\"twelve\"")]
    [InlineData("vit", "config.depth", "12.5")]
    [InlineData("vqkd", "vqkd.codes", "0")]
    [InlineData("vqkd", "vqkd.code_dim", "-4")]
    [InlineData("vqkd", "vqkd.decoder_depth", "0")]
    [InlineData("vqkd", "vqkd.encoder.num_heads", "0")]
    [InlineData("dvae", "dvae.group_count", "40")]
    [InlineData("dvae", "dvae.hidden_size", "6")]
    [InlineData("dvae", "dvae.vocab_size", "0")]
    public void A_bad_value_is_refused_naming_the_file_and_the_field(string kind, string field, string value)
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), kind);
        string config = Path.Combine(model, "config.json");
        TinyModels.Edit(config, field, JsonNode.Parse(value));
        string message = Refusal(() => ModelDirectory.ReadSpec(model));
        Assert.Contains(config, message);
        Assert.Contains(field, message);
        Assert.Equal(message, Refusal(() => ModelDirectory.Load(model).Model.Dispose()));
    }

    [Theory]
    [InlineData("config.depth", "1000000000")]
    [InlineData("config.embed_dim", "2000000000")]
    [InlineData("config.num_classes", "2000000000")]
    [InlineData("config.img_size", "8192")]
    public void A_huge_size_is_refused_at_once_without_allocating(string field, string value)
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        TinyModels.Edit(Path.Combine(model, "config.json"), field, JsonNode.Parse(value));
        var watch = Stopwatch.StartNew();
        string message = Refusal(() => ModelDirectory.Load(model).Model.Dispose());
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
        Assert.Contains(Path.Combine(model, "config.json"), message);
        Assert.Contains(field, message);
    }

    [Theory]
    [InlineData("config.depth", "5")]
    [InlineData("config.embed_dim", "32")]
    [InlineData("config.num_classes", "7")]
    [InlineData("config.img_size", "32")]
    [InlineData("config.mlp_ratio", "2")]
    [InlineData("config.use_mask_token", "true")]
    public void A_size_the_weights_do_not_hold_is_refused_naming_config_field_and_weights_before_building(string field, string value)
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        TinyModels.Edit(Path.Combine(model, "config.json"), field, JsonNode.Parse(value));
        string message = Refusal(() => ModelDirectory.ReadSpec(model));
        Assert.Contains(Path.Combine(model, "config.json"), message);
        Assert.Contains(Path.Combine(model, "weights.safetensors"), message);
        Assert.Contains(field.Split('.')[1], message);
    }

    [Fact]
    public void A_missing_field_is_named_instead_of_being_blamed_on_the_weights()
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        string config = Path.Combine(model, "config.json");
        TinyModels.Edit(config, "config.depth", null, remove: true);
        string message = Refusal(() => ModelDirectory.Load(model).Model.Dispose());
        Assert.Contains(config, message);
        Assert.Contains("config.depth", message);
        Assert.Contains("missing", message);
        Assert.DoesNotContain("weights.safetensors", message);
    }

    [Theory]
    [InlineData("config.depht", "12", "config.depht")]
    [InlineData("extra", "1", "extra")]
    [InlineData("config.grid_size", "99", "config.grid_size")]
    [InlineData("architecture", "\"nonsense\"", "nonsense")]
    [InlineData("architecture", "\"dvae\"", "dvae")]
    [InlineData("architecture", "\"\"", "architecture")]
    public void Unknown_fields_and_architectures_are_refused_by_name(string field, string value, string named)
    {
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        string config = Path.Combine(model, "config.json");
        TinyModels.Edit(config, field, JsonNode.Parse(value));
        string message = Refusal(() => ModelDirectory.ReadSpec(model));
        Assert.Contains(config, message);
        Assert.Contains(named, message);
    }

    [Fact]
    public void Every_kind_reads_back_and_the_import_names_are_known_architectures()
    {
        using var dir = new TemporaryDirectory();
        foreach (string kind in new[] { "vit", "beit", "vqkd", "dvae" })
        {
            string model = TinyModels.Write(dir.Combine(kind), kind);
            var (spec, network) = ModelDirectory.Load(model);
            network.Dispose();
            Assert.Equal(TinyModels.Spec(kind), spec);
        }
        foreach (string name in new[] { "beit", "vit", "clip", "beit-base", "dino-s16", "clip-b16" })
        {
            string model = dir.Combine("named-" + name);
            TinyModels.Write(model, "vit");
            TinyModels.Edit(Path.Combine(model, "config.json"), "architecture", name);
            Assert.Equal(name, ModelDirectory.ReadSpec(model).Architecture);
        }
    }

    [Fact]
    public void The_expected_shapes_of_a_configuration_are_the_state_dict_of_the_module_it_builds()
    {
        TorchBackend.EnsureLoaded();
        var random = new Random(7);
        for (int i = 0; i < 40; i++)
        {
            var spec = RandomSpec(random, i % 4);
            using var module = ModelCatalog.Build(spec);
            var actual = module.state_dict().ToDictionary(p => p.Key, p => p.Value.shape);
            var expected = ModelShapes.Of(spec);
            Assert.Equal(actual.Keys.Order(StringComparer.Ordinal), expected.Keys.Order(StringComparer.Ordinal));
            foreach (var (name, shape) in actual) Assert.True(shape.SequenceEqual(expected[name]), $"{spec}: {name}");
            Assert.Equal(module.state_dict().Values.Sum(t => t.numel()), ModelShapes.ElementCount(spec));
        }
    }

    private static ModelSpec RandomSpec(Random random, int kind)
    {
        int heads = random.Next(1, 4), patch = random.Next(1, 4) * 2;
        var vit = new MimFlow.Models.Backbones.VitConfig
        {
            ImgSize = patch * random.Next(1, 5), PatchSize = patch, InChannels = random.Next(1, 5), EmbedDim = heads * random.Next(1, 5) * 2,
            Depth = random.Next(1, 4), NumHeads = heads, MlpRatio = random.Next(1, 9) / 2.0, NumClasses = random.Next(0, 3) == 0 ? 0 : random.Next(1, 6),
            BeitAttention = random.Next(2) == 0, QkvBias = random.Next(2) == 0, UseAbsPosEmb = random.Next(2) == 0, UseRelPosBias = random.Next(2) == 0,
            UseSharedRelPosBias = random.Next(2) == 0, InitValues = random.Next(2) == 0 ? null : 0.1, GlobalPool = random.Next(2) == 0 ? "avg" : "token",
            PreNorm = random.Next(2) == 0, UseMaskToken = random.Next(2) == 0,
        };
        return kind switch
        {
            0 or 1 => new ModelSpec("vit-random", Config: vit),
            2 => new ModelSpec("vqkd-random", Vqkd: MimFlow.Models.Tokenizers.VqKdConfig.ForEncoder(vit) with
            {
                Codes = random.Next(1, 9), CodeDim = random.Next(1, 5), DecoderDepth = random.Next(1, 3), TeacherDim = random.Next(1, 9),
            }),
            _ => new ModelSpec("dvae", Dvae: new MimFlow.Models.Tokenizers.DalleEncoderConfig(random.Next(1, 4), 4 * random.Next(1, 3), random.Next(1, 3), random.Next(1, 4), random.Next(1, 9))),
        };
    }

    [Theory]
    [InlineData("depth", "1e10")]
    [InlineData("depth", "12.5")]
    [InlineData("num_heads", "0")]
    [InlineData("patch_size", "0")]
    [InlineData("embed_dim", "-192")]
    [InlineData("img_size", "\"big\"")]
    [InlineData("mlp_ratio", "[4]")]
    [InlineData("depht", "3")]
    public void A_bad_timm_config_json_is_refused_naming_the_file_and_argument(string argument, string value)
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("timm_config.json");
        File.Copy(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "timm_config.json"), path);
        TinyModels.Edit(path, "config." + argument, JsonNode.Parse(value));
        string message = Refusal(() => TimmConfig.Parse(File.ReadAllText(path), path));
        Assert.Contains(path, message);
        Assert.Contains(argument, message);
    }

    [Fact]
    public void A_timm_config_json_that_is_not_json_names_the_file()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("timm_config.json");
        File.WriteAllText(path, "{\"timm_class\": \"Beit\", ");
        Assert.Contains(path, Refusal(() => TimmConfig.Parse(File.ReadAllText(path), path)));
    }

    [Fact]
    public void A_timm_config_the_weights_do_not_hold_is_refused_before_building()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("timm_config.json");
        File.Copy(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "timm_config.json"), path);
        TinyModels.Edit(path, "config.depth", 1000);
        var watch = Stopwatch.StartNew();
        string message = Refusal(() => ModelImport.Run(new ModelImportRequest("timm", SharedFixtures.PathOf("timm", "beit_tiny_relpos", "weights.safetensors"), dir.Combine("out"))
        {
            Config = path,
        }));
        Assert.Contains(path, message);
        Assert.Contains("depth", message);
        Assert.False(Directory.Exists(dir.Combine("out")));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }

    [Theory]
    [InlineData("num_classes", "\"x\"")]
    [InlineData("num_classes", "1e30")]
    [InlineData("pretrained_cfg.input_size", "[3, \"a\", \"a\"]")]
    [InlineData("pretrained_cfg.input_size", "[3, 100000, 100000]")]
    [InlineData("model_args.depth", "0")]
    [InlineData("model_args.num_heads", "0")]
    [InlineData("model_args.depth", "1e10")]
    [InlineData("model_args.depth", "40")]
    [InlineData("label_names", "[1, 2, 3]")]
    [InlineData("mimflow.layer_norm_eps", "-1")]
    [InlineData("mimflow.other", "1")]
    [InlineData("unexpected_key", "1")]
    public void A_bad_timm_hub_config_is_refused_naming_the_file_and_field(string field, string value)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        ModelExport.Run(new ModelExportRequest("timm", model, dir.Combine("hub")));
        string config = dir.Combine("hub", "config.json");
        if (field.StartsWith("model_args.", StringComparison.Ordinal) || field.StartsWith("mimflow.", StringComparison.Ordinal))
        {
            var root = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
            root[field.Split('.')[0]] ??= new JsonObject();
            File.WriteAllText(config, root.ToJsonString());
        }
        TinyModels.Edit(config, field, JsonNode.Parse(value));
        string message = Refusal(() => ModelImport.Run(new ModelImportRequest("timm", dir.Combine("hub"), dir.Combine("out"))));
        Assert.Contains(config, message);
        Assert.Contains(field.Split('.')[^1], message);
    }

    [Theory]
    [InlineData("num_attention_heads", "0")]
    [InlineData("num_attention_heads", "5")]
    [InlineData("hidden_size", "1.5")]
    [InlineData("num_hidden_layers", "1e10")]
    [InlineData("image_size", "[32, \"x\"]")]
    [InlineData("layer_norm_eps", "-1")]
    [InlineData("id2label", "{\"0\": 1, \"1\": 2, \"2\": 3}")]
    [InlineData("num_labels", "\"3\"")]
    public void A_bad_transformers_config_json_is_refused_naming_the_file_and_field(string field, string value)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        using (var scope = NewDisposeScope())
        {
            var timm = HuggingFaceNaming.Read(Path.Combine(model, "weights.safetensors"));
            Directory.CreateDirectory(dir.Combine("hf"));
            HuggingFaceNaming.Write(dir.Combine("hf", "model.safetensors"), HuggingFaceNaming.Vit(timm));
        }
        var vit = TinyModels.Vit;
        var json = new JsonObject
        {
            ["model_type"] = "vit", ["hidden_size"] = vit.EmbedDim, ["num_hidden_layers"] = vit.Depth, ["num_attention_heads"] = vit.NumHeads,
            ["intermediate_size"] = (int)(vit.EmbedDim * vit.MlpRatio), ["hidden_act"] = "gelu", ["layer_norm_eps"] = 1e-6, ["image_size"] = vit.ImgSize,
            ["patch_size"] = vit.PatchSize, ["num_channels"] = 3, ["qkv_bias"] = true,
        };
        string config = dir.Combine("hf", "config.json");
        File.WriteAllText(config, json.ToJsonString());
        var good = ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("hf"), dir.Combine("good")));
        Assert.Equal(vit with { LayerNormEps = 1e-6 }, good.Spec.Config);

        TinyModels.Edit(config, field, JsonNode.Parse(value));
        string message = Refusal(() => ModelImport.Run(new ModelImportRequest("hf-vit", dir.Combine("hf"), dir.Combine("out"))));
        Assert.Contains(config, message);
        Assert.Contains(field, message);
    }

    [Theory]
    [InlineData("blocks.99999999999.norm1.weight")]
    [InlineData("blocks.3000.norm1.weight")]
    public void A_checkpoint_naming_an_absurd_block_is_refused_without_building(string extra)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        string model = TinyModels.Write(dir.Combine("m"), "beit");
        var writer = new SafetensorsWriter();
        using (var weights = SafetensorsFile.Open(Path.Combine(model, "weights.safetensors")))
            foreach (var entry in weights.Entries) writer.Add(entry.Name, entry.DType, entry.Shape, weights.Bytes(entry));
        writer.AddFloat32(extra, [16], new float[16]);
        string path = dir.Combine("beit.safetensors");
        writer.Write(path);
        var watch = Stopwatch.StartNew();
        string message = Refusal(() => ModelImport.Run(new ModelImportRequest("unilm-beit", path, dir.Combine("out"))));
        Assert.Contains(path, message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }
}
