using MimFlow.Models.Backbones;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Heads;

/// <summary>
/// BEiT v2's patch aggregation: the [CLS] state of the last layer joined with the patch states of layer l
/// (l = 9 for base, 21 for large; 1-based as in the paper) passes through a shallow Transformer
/// (<c>cls_pt_layers</c>, 2 blocks) and a LayerNorm (<c>cls_pt_norm</c>); the shared MIM head then predicts the codes
/// of masked patches from it, which forces [CLS] to aggregate the image.
/// </summary>
public sealed class PatchAggregation : Module<Tensor, Tensor, Tensor?, Tensor>
{
    [ComponentName(Name = "cls_pt_layers")] private readonly ModuleList<Block> layers;
    [ComponentName(Name = "cls_pt_norm")] private readonly LayerNorm norm;

    public PatchAggregation(VitConfig config, int depth = 2) : base("PatchAggregation")
    {
        layers = new ModuleList<Block>(Enumerable.Range(0, depth).Select(_ => new Block(config, config.DropPathRate)).ToArray());
        norm = LayerNorm(config.EmbedDim, config.LayerNormEps);
        RegisterComponents();
    }

    /// <summary>Layer l for the paper's sizes: 9 of 12 (base), 21 of 24 (large); else three quarters of the depth.</summary>
    public static int EarlyLayer(int depth) => depth switch { 12 => 9, 24 => 21, _ => Math.Max(1, depth * 3 / 4) };

    /// <param name="finalStates">[B, 1 + N, D] after the last block (before any final norm).</param>
    /// <param name="earlyStates">[B, 1 + N, D] after block l.</param>
    /// <param name="sharedBias">The backbone's shared relative position bias, if it has one.</param>
    public override Tensor forward(Tensor finalStates, Tensor earlyStates, Tensor? sharedBias)
    {
        using var scope = NewDisposeScope();
        var x = cat([finalStates[.., ..1], earlyStates[.., 1..]], 1);
        foreach (var block in layers) x = block.forward(x, sharedBias);
        return norm.forward(x).MoveToOuterDisposeScope();
    }
}
