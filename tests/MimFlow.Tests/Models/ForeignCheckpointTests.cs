using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class ForeignCheckpointTests
{
    public ForeignCheckpointTests() => TorchBackend.EnsureLoaded();

    private static void Write(string path, IEnumerable<(string Name, Tensor Value)> tensors)
    {
        var writer = new SafetensorsWriter();
        foreach (var (name, value) in tensors)
        {
            using var cpu = value.detach().to(float32).contiguous();
            writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
        }
        writer.Write(path);
    }

    private static nn.Module Imported(ForeignCheckpoint checkpoint)
    {
        var module = ModelCatalog.Build(checkpoint.Spec);
        WeightLoader.LoadStrict(module, checkpoint.Tensors);
        module.eval();
        return module;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Unilm_beit_checkpoints_import_with_their_configuration_and_leave_out_pretraining_heads(bool pretraining)
    {
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var config = new VitConfig
        {
            ImgSize = 32, PatchSize = 8, EmbedDim = 48, Depth = 2, NumHeads = 4, BeitAttention = true, UseAbsPosEmb = !pretraining,
            UseRelPosBias = !pretraining, UseSharedRelPosBias = pretraining, InitValues = 0.1, UseMaskToken = pretraining,
            GlobalPool = pretraining ? "token" : "avg", NumClasses = pretraining ? 0 : 7, MlpRatio = 2,
        };
        using var original = new VisionTransformer(config);
        Initialization.Apply(original, 3);
        original.eval();
        var tensors = original.state_dict().Select(p => ("module." + p.Key, p.Value)).ToList();
        tensors.Add(("module.blocks.0.attn.relative_position_index", zeros(17, 17)));
        if (pretraining)
        {
            tensors.Add(("module.lm_head.weight", randn(64, 48)));
            tensors.Add(("module.lm_head.bias", zeros(64)));
            tensors.Add(("module.cls_pt_layers.0.norm1.weight", ones(48)));
        }
        string path = dir.Combine("beit.safetensors");
        Write(path, tensors);

        using var file = SafetensorsFile.Open(path);
        var checkpoint = ForeignCheckpoints.Read("unilm-beit", new SafetensorsTensors(file));
        Assert.Equal(config with { DropPathRate = 0 }, checkpoint.Spec.Config);
        Assert.Contains("module.blocks.0.attn.relative_position_index", checkpoint.LeftOut);
        Assert.Equal(pretraining ? 4 : 1, checkpoint.LeftOut.Count);
        using var imported = (VisionTransformer)Imported(checkpoint);
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(1));
        Assert.True(original.ForwardFeatures(pixels).allclose(imported.ForwardFeatures(pixels), 0, 0));
    }

    [Fact]
    public void Openai_clip_visual_weights_become_a_timm_vit_whose_head_is_the_projection()
    {
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        const int width = 128, embed = 24;
        var config = Architectures.Get("clip-b16", numClasses: embed) with { ImgSize = 32, PatchSize = 16, EmbedDim = width, Depth = 2, NumHeads = width / 64 };
        using var original = new VisionTransformer(config);
        Initialization.Apply(original, 8);
        original.eval();
        var state = original.state_dict();
        using (no_grad()) state["head.bias"].zero_();
        // The OpenAI layout, written out by hand: the inverse of the documented mapping.
        var clip = new List<(string, Tensor)>
        {
            ("visual.conv1.weight", state["patch_embed.proj.weight"]),
            ("visual.class_embedding", state["cls_token"].reshape(width)),
            ("visual.positional_embedding", state["pos_embed"][0]),
            ("visual.ln_pre.weight", state["norm_pre.weight"]), ("visual.ln_pre.bias", state["norm_pre.bias"]),
            ("visual.ln_post.weight", state["norm.weight"]), ("visual.ln_post.bias", state["norm.bias"]),
            ("visual.proj", state["head.weight"].t()),
            ("token_embedding.weight", randn(10, 16)), ("logit_scale", ones(1)),
        };
        for (int i = 0; i < 2; i++)
            foreach (string part in new[] { "weight", "bias" })
            {
                clip.Add(($"visual.transformer.resblocks.{i}.ln_1.{part}", state[$"blocks.{i}.norm1.{part}"]));
                clip.Add(($"visual.transformer.resblocks.{i}.attn.in_proj_{part}", state[$"blocks.{i}.attn.qkv.{part}"]));
                clip.Add(($"visual.transformer.resblocks.{i}.attn.out_proj.{part}", state[$"blocks.{i}.attn.proj.{part}"]));
                clip.Add(($"visual.transformer.resblocks.{i}.ln_2.{part}", state[$"blocks.{i}.norm2.{part}"]));
                clip.Add(($"visual.transformer.resblocks.{i}.mlp.c_fc.{part}", state[$"blocks.{i}.mlp.fc1.{part}"]));
                clip.Add(($"visual.transformer.resblocks.{i}.mlp.c_proj.{part}", state[$"blocks.{i}.mlp.fc2.{part}"]));
            }
        string path = dir.Combine("clip.safetensors");
        Write(path, clip);

        using var file = SafetensorsFile.Open(path);
        var checkpoint = ForeignCheckpoints.Read("openai-clip", new SafetensorsTensors(file));
        Assert.Equal(config with { DropPathRate = 0 }, checkpoint.Spec.Config);
        Assert.Equal(["logit_scale", "token_embedding.weight"], checkpoint.LeftOut.Order());
        using var imported = (VisionTransformer)Imported(checkpoint);
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(1));
        var features = imported.ForwardFeatures(pixels);
        Assert.True(original.ForwardFeatures(pixels).allclose(features, 0, 0));
        var cls = features[.., 0];
        Assert.True(allclose(imported.ForwardHead(features), cls.matmul(clip.Single(c => c.Item1 == "visual.proj").Item2), 1e-5, 1e-5),
            "logits must be CLIP's image embedding: ln_post(x_cls) · proj");
    }

    [Fact]
    public void Unilm_vqkd_checkpoints_import_without_their_teacher_and_tokenize_identically()
    {
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var vqkdConfig = VqKdConfig.ForEncoder(new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2 })
            with { Codes = 64, CodeDim = 8, DecoderDepth = 1, TeacherDim = 20 };
        using var original = new VqKd(vqkdConfig);
        original.Initialize(4);
        original.eval();
        var tensors = original.state_dict().Select(p => (p.Key, p.Value)).ToList();
        tensors.Add(("teacher_model.visual.conv1.weight", randn(4, 3, 2, 2)));
        tensors.Add(("scaling_layer.shift", zeros(1, 3, 1, 1)));
        tensors.Add(("quantize.embedding.embed_avg", randn(64, 8)));
        string path = dir.Combine("vqkd.safetensors");
        Write(path, tensors);

        using var file = SafetensorsFile.Open(path);
        // A 32-wide encoder is not a standard size and has no relative table: the heads must be given.
        Assert.Contains("--heads", Assert.Throws<InvalidDataException>(() => ForeignCheckpoints.Read("unilm-vqkd", new SafetensorsTensors(file))).Message);
        var checkpoint = ForeignCheckpoints.Read("unilm-vqkd", new SafetensorsTensors(file), heads: 2);
        Assert.Equal(vqkdConfig, checkpoint.Spec.Vqkd);
        Assert.Equal(3, checkpoint.LeftOut.Count);
        using var imported = (VqKd)Imported(checkpoint);
        using var noGrad = no_grad();
        var pixels = randn(3, 3, 32, 32, generator: new Generator(6));
        Assert.Equal(original.Tokenize(pixels).data<long>().ToArray(), imported.Tokenize(pixels).data<long>().ToArray());
    }

    [Fact]
    public void Dall_e_encoder_state_dicts_import_with_sizes_read_off_their_shapes()
    {
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var config = new DalleEncoderConfig(GroupCount: 3, HiddenSize: 16, BlocksPerGroup: 1, VocabSize: 64);
        using var original = DalleEncoder.Create(config, 9);
        string path = dir.Combine("encoder.safetensors");
        Write(path, original.state_dict().Select(p => (p.Key, p.Value)));
        using var file = SafetensorsFile.Open(path);
        var checkpoint = ForeignCheckpoints.Read("dall-e", new SafetensorsTensors(file));
        Assert.Equal(config, checkpoint.Spec.Dvae);
        using var imported = (DalleEncoder)Imported(checkpoint);
        using var noGrad = no_grad();
        var pixels = rand(2, 3, 32, 32, generator: new Generator(3));
        Assert.Equal(original.Tokenize(pixels).data<long>().ToArray(), imported.Tokenize(pixels).data<long>().ToArray());
    }

    [Fact]
    public void Unknown_tensors_in_a_clip_checkpoint_are_an_error_naming_them()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("odd.safetensors");
        Write(path, [("conv1.weight", zeros(64, 3, 8, 8)), ("positional_embedding", zeros(5, 64)), ("proj", zeros(64, 8)), ("adapter.weight", zeros(2))]);
        using var file = SafetensorsFile.Open(path);
        var error = Assert.Throws<InvalidDataException>(() => ForeignCheckpoints.Read("openai-clip", new SafetensorsTensors(file)));
        Assert.Contains("class_embedding", error.Message);
        Assert.Contains(path, error.Message);
    }
}
