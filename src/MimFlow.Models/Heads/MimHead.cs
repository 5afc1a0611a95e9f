using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Heads;

/// <summary>
/// BEiT's masked-image-modeling head: an optional LayerNorm (<c>norm</c>, for backbones without a final norm) and a
/// linear layer to the tokenizer's codebook (<c>lm_head</c>, 8192 codes), applied to tokens [M, D] → logits [M, K].
/// MaskDistill uses the same shape of head to the teacher's feature dimension instead of codes.
/// </summary>
public sealed class MimHead : Module<Tensor, Tensor>
{
    [ComponentName(Name = "norm")] private readonly LayerNorm? norm;
    [ComponentName(Name = "lm_head")] private readonly Linear output;

    public MimHead(int dim, int outputs, bool withNorm, double eps = 1e-6) : base("MimHead")
    {
        if (withNorm) norm = LayerNorm(dim, eps);
        output = Linear(dim, outputs);
        RegisterComponents();
    }

    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        return output.forward(norm is null ? tokens : norm.forward(tokens)).MoveToOuterDisposeScope();
    }
}
