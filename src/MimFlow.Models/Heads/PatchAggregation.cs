using MimFlow.Models.Backbones;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Heads;

/// <summary>
/// BEiT v2's patch aggregation: the [CLS] state of the last layer joined with the patch states of layer l
/// (l = 9 for base, 21 for large; 1-based as in the paper and beit2's <c>--early_layers</c>, so the states after
/// 0-based block l − 1), both taken before any final norm, pass through a shallow Transformer (<c>cls_pt_layers</c>,
/// 2 blocks); the MIM head then predicts the codes of masked patches from it, which forces [CLS] to aggregate the
/// image. With BEiT v2's default shared head (<c>shared_lm_head</c>) the backbone's final norm and MIM head follow
/// and there is no <c>cls_pt_norm</c>; a separate head has its own LayerNorm (<c>cls_pt_norm</c>).
/// </summary>
public sealed class PatchAggregation : Module<Tensor, Tensor, Tensor?, Tensor>
{
    [ComponentName(Name = "cls_pt_layers")] private readonly ModuleList<Block> layers;
    [ComponentName(Name = "cls_pt_norm")] private readonly LayerNorm? norm;

    /// <param name="ownNorm">False for the shared head: <see cref="module.forward"/> then returns the blocks' output
    /// un-normalised, for the backbone's final norm.</param>
    /// <param name="earlyLayer">l, when known: the blocks then take beit2's stochastic depth rates, positions l, l + 1,
    /// … of the backbone's linear schedule; null: the backbone's maximum rate.</param>
    public PatchAggregation(VitConfig config, int depth = 2, bool ownNorm = true, int? earlyLayer = null) : base("PatchAggregation")
    {
        int span = Math.Max(config.Depth, (earlyLayer ?? 0) + depth) - 1;
        double Rate(int i) => earlyLayer is int l && span > 0 ? config.DropPathRate * (l + i) / span : config.DropPathRate;
        layers = new ModuleList<Block>(Enumerable.Range(0, depth).Select(i => new Block(config, Rate(i))).ToArray());
        if (ownNorm) norm = LayerNorm(config.EmbedDim, config.LayerNormEps);
        RegisterComponents();
    }

    public bool HasOwnNorm => norm is not null;

    /// <summary>Layer l for the paper's sizes: 9 of 12 (base), 21 of 24 (large); else three quarters of the depth.</summary>
    public static int EarlyLayer(int depth) => depth switch { 12 => 9, 24 => 21, _ => Math.Max(1, depth * 3 / 4) };

    /// <param name="finalStates">[B, 1 + N, D] after the last block (before any final norm).</param>
    /// <param name="earlyStates">[B, 1 + N, D] after block l (1-based: ForwardLayers' hidden state l − 1), before any norm.</param>
    /// <param name="sharedBias">The backbone's shared relative position bias, if it has one.</param>
    public override Tensor forward(Tensor finalStates, Tensor earlyStates, Tensor? sharedBias)
    {
        using var scope = NewDisposeScope();
        var x = cat([finalStates[.., ..1], earlyStates[.., 1..]], 1);
        foreach (var block in layers) x = block.forward(x, sharedBias);
        return (norm is null ? x : norm.forward(x)).MoveToOuterDisposeScope();
    }
}
