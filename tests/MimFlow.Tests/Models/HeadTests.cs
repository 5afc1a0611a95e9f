using MimFlow.Models.Backbones;
using MimFlow.Models.Heads;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class HeadTests
{
    private static readonly VitConfig Tiny = new()
    {
        ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 4, NumHeads = 2, BeitAttention = true, UseAbsPosEmb = false,
        UseRelPosBias = true, InitValues = 0.1, GlobalPool = "avg", UseMaskToken = true,
    };

    public HeadTests() => TorchBackend.EnsureLoaded();

    [Fact]
    public void Mim_head_predicts_the_codebook_for_masked_patches_only_in_order()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(1);
        var states = randn(2, 17, 32);
        var mask = zeros(2, 16, dtype: ScalarType.Bool);
        mask[0, 3] = true;
        mask[1, 0] = true;
        mask[1, 15] = true;
        var tokens = MaskedPrediction.Gather(states, mask);
        Assert.Equal(new long[] { 3, 32 }, tokens.shape);
        Assert.True(allclose(tokens[0], states[0, 4], 0, 0));
        Assert.True(allclose(tokens[2], states[1, 16], 0, 0));
        using var head = new MimHead(32, 8192, withNorm: true);
        Assert.Equal(new long[] { 3, 8192 }, head.forward(tokens).shape);
        Assert.Contains("lm_head.weight", head.state_dict().Keys);
        Assert.Contains("norm.weight", head.state_dict().Keys);
    }

    [Fact]
    public void Patch_aggregation_reads_final_cls_and_layer_l_patches_only()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(2);
        using var model = new VisionTransformer(Tiny);
        using var aggregation = new PatchAggregation(Tiny);
        model.eval();
        aggregation.eval();
        Assert.Equal(9, PatchAggregation.EarlyLayer(12));
        Assert.Equal(21, PatchAggregation.EarlyLayer(24));
        using var noGrad = no_grad();
        var pixels = randn(1, 3, 32, 32);
        int early = PatchAggregation.EarlyLayer(Tiny.Depth);
        var (features, hidden) = model.ForwardLayers(pixels, null, [early - 1]);
        var output = aggregation.forward(features, hidden[early - 1], model.SharedBias());
        Assert.Equal(new long[] { 1, 17, 32 }, output.shape);

        var changedFinalPatches = features.clone();
        changedFinalPatches[.., 1..] += 5;
        Assert.True(allclose(output, aggregation.forward(changedFinalPatches, hidden[early - 1], null)));
        var changedCls = features.clone();
        changedCls[.., 0] += 5;
        Assert.False(allclose(output, aggregation.forward(changedCls, hidden[early - 1], null)));
        var changedEarly = hidden[early - 1].clone();
        changedEarly[.., 1..] += 5;
        Assert.False(allclose(output, aggregation.forward(features, changedEarly, null)));
        Assert.Contains("cls_pt_layers.1.attn.qkv.weight", aggregation.state_dict().Keys);
    }

    [Fact]
    public void Dino_head_is_l2_normalised_before_a_unit_norm_prototype_layer()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(3);
        using var head = new DinoHead(32, outputs: 64, hidden: 48, bottleneck: 16);
        head.eval();
        using var noGrad = no_grad();
        var tokens = randn(5, 32);
        var logits = head.forward(tokens);
        Assert.Equal(new long[] { 5, 64 }, logits.shape);
        // Unit-norm inputs against unit-norm prototypes: every logit is a cosine.
        Assert.True(logits.abs().max().item<float>() <= 1.0001f);
        var names = head.state_dict().Keys.ToList();
        foreach (string name in new[] { "mlp.0.weight", "mlp.2.bias", "mlp.4.weight", "last_layer.weight_g", "last_layer.weight_v" })
            Assert.Contains(name, names);
        Assert.False(head.named_parameters().Single(p => p.name == "last_layer.weight_g").parameter.requires_grad);
    }
}
