using MimFlow.Models.Backbones;
using MimFlow.Models.Heads;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>
/// BEiT (v1): the backbone sees the image with masked patches replaced by its mask token; its final states at the
/// masked positions go through the MIM head (a Linear to the tokenizer's 8192 codes) and a cross-entropy
/// against the codes the tokenizer gave the uncorrupted image, averaged over all masked patches of the batch, as
/// unilm's beit/engine_for_pretraining.py does (labels = codes[mask]; unmasked patches contribute nothing).
/// </summary>
/// <remarks>
/// unilm's pretraining model normalises the last block with <c>norm</c> before <c>lm_head</c>. A backbone configured
/// for average pooling has no such norm (only the fine-tuning <c>fc_norm</c>), so the MIM head then carries the
/// LayerNorm itself: either way the head reads normalised final states.
/// </remarks>
public sealed class BeitObjective : nn.Module, IShardObjective
{
    [ComponentName(Name = "backbone")] private readonly VisionTransformer backbone;
    [ComponentName(Name = "head")] private readonly MimHead head;

    public BeitObjective(VisionTransformer backbone, int codebookSize = 8192) : base("BeitObjective")
    {
        if (!backbone.Config.UseMaskToken) throw new ArgumentException("BEiT needs a backbone with a mask token (config UseMaskToken)");
        this.backbone = backbone;
        head = MimHeads.For(backbone, codebookSize);
        RegisterComponents();
    }

    public string Name => "beit";

    public VisionTransformer Backbone => backbone;

    public MimHead Head => head;

    public IReadOnlyList<Parameter> TrainableParameters() => ObjectiveInputs.Trainable(this);

    /// <summary>BEiT's initialisation (truncated normal 0.02, residual rescaling) of the backbone and the MIM head.</summary>
    public void Initialize(long seed) => Initialization.Apply(this, seed, backbone.Config.InitValues, _ => true);

    /// <summary>BEiT pretrains with AdamW β 0.9/0.999.</summary>
    public double DefaultBeta2 => 0.999;

    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, ShardTargets targets) => Loss(pixels, mask, targets.RequireCodes(Name));

    /// <param name="pixels">[B, 3, H, W], normalised.</param>
    /// <param name="mask">[B, N], 1 (or true) where the patch is masked.</param>
    /// <param name="codes">[B, N] tokenizer codes of the uncorrupted image (any integer type).</param>
    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, Tensor codes)
    {
        using var scope = NewDisposeScope();
        var (masked, labels) = MimHeads.MaskedCodes(pixels, mask, codes, backbone.Config);
        var logits = head.forward(MaskedPrediction.Gather(backbone.ForwardFeatures(pixels, masked), masked));
        var mim = MimHeads.CodeLoss(logits, labels);
        return new ObjectiveLoss(mim.alias(), [new("mim", mim)], [new("mim_acc", ObjectiveInputs.Accuracy(logits, labels))]) { Items = labels.shape[0] }
            .MoveToOuterDisposeScope();
    }
}

/// <summary>The MIM head and code targets BEiT and BEiT v2 share.</summary>
internal static class MimHeads
{
    /// <summary>A head to <paramref name="outputs"/> that reads normalised states: with its own LayerNorm only when the backbone has no final norm.</summary>
    public static MimHead For(VisionTransformer backbone, int outputs)
    {
        var config = backbone.Config;
        var head = new MimHead(config.EmbedDim, outputs, withNorm: config.UsesAveragePool, config.LayerNormEps);
        head.to(ObjectiveInputs.DeviceOf(backbone));
        return head;
    }

    /// <summary>The mask as the backbone takes it, and codes[mask] as int64 [M] in the row-major order <see cref="MaskedPrediction.Gather"/> uses.</summary>
    public static (Tensor Masked, Tensor Labels) MaskedCodes(Tensor pixels, Tensor mask, Tensor codes, VitConfig config)
    {
        var masked = ObjectiveInputs.Masked(pixels, mask, config);
        if (!codes.shape.SequenceEqual(masked.shape))
            throw new ArgumentException($"codes are [{string.Join(", ", codes.shape)}], expected [{masked.shape[0]}, {config.NumPatches}] like the mask");
        if (codes.is_floating_point()) throw new ArgumentException("codes must be integer tokenizer indices");
        var labels = codes[masked].to(ScalarType.Int64);
        ObjectiveInputs.CheckSomeMasked(labels);
        return (masked, labels);
    }

    /// <summary>Cross-entropy of predicted codes, in float32 whatever the compute type (as autocast does): a bf16 softmax over 8192 codes loses the gradient.</summary>
    public static Tensor CodeLoss(Tensor logits, Tensor labels) => nn.functional.cross_entropy(logits.to(ScalarType.Float32), labels);
}
