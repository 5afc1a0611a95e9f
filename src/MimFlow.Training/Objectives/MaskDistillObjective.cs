using MimFlow.Models.Backbones;
using MimFlow.Models.Heads;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>
/// MaskDistill's loss settings. The paper (Peng et al., "A Unified View of Masked Image Modeling") regresses teacher
/// features normalised by a LayerNorm without affine parameters under a Smooth-ℓ1 loss with β = 2. The official
/// code was never published (unilm/unimim holds only a README); β = 2 is also the default of the public
/// reimplementation bwconrad/masked-distillation (smooth_l1_beta), which averages over the masked tokens' features.
/// </summary>
public sealed record MaskDistillOptions
{
    /// <summary>Where Smooth-ℓ1 turns from quadratic (|d|²/(2β)) to linear (|d| − β/2).</summary>
    public double Beta { get; init; } = 2.0;

    /// <summary>The target LayerNorm's epsilon (BEiT's LayerNorm eps; the paper gives none).</summary>
    public double TargetEps { get; init; } = 1e-6;
}

/// <summary>
/// MaskDistill: the backbone's final states at masked positions pass a fully connected head (Linear D → teacher
/// dimension) and regress the frozen teacher's patch features of the uncorrupted image, normalised per token without
/// affine, under Smooth-ℓ1 averaged over every feature of every masked token. Teacher features arrive as a tensor
/// (read from shards, or computed online by a frozen teacher) and are treated as constants.
/// </summary>
/// <remarks>
/// Normalising the target per token removes each token's offset and scale, so the regression weighs every token
/// alike whatever the teacher's feature magnitudes; no affine, because a learnable target scale would let the
/// objective shrink its own target.
/// </remarks>
public sealed class MaskDistillObjective : nn.Module, IShardObjective
{
    [ComponentName(Name = "backbone")] private readonly VisionTransformer backbone;
    [ComponentName(Name = "head")] private readonly MimHead head;
    private readonly MaskDistillOptions options;

    public MaskDistillObjective(VisionTransformer backbone, int teacherDim, MaskDistillOptions? options = null) : base("MaskDistillObjective")
    {
        if (!backbone.Config.UseMaskToken) throw new ArgumentException("MaskDistill needs a backbone with a mask token (config UseMaskToken)");
        if (teacherDim < 1) throw new ArgumentException("the teacher dimension must be positive");
        this.options = options ?? new MaskDistillOptions();
        if (this.options.Beta <= 0) throw new ArgumentException("Smooth-l1 beta must be positive");
        TeacherDim = teacherDim;
        this.backbone = backbone;
        head = MimHeads.For(backbone, teacherDim);
        RegisterComponents();
    }

    public string Name => "maskdistill";

    public int TeacherDim { get; }

    public MaskDistillOptions Options => options;

    public VisionTransformer Backbone => backbone;

    public MimHead Head => head;

    public IReadOnlyList<Parameter> TrainableParameters() => ObjectiveInputs.Trainable(this);

    public void Initialize(long seed) => Initialization.Apply(this, seed, backbone.Config.InitValues, _ => true);

    /// <summary>LayerNorm without affine over the feature dimension: the regression target of each token.</summary>
    public Tensor NormalizeTargets(Tensor teacherFeatures) =>
        nn.functional.layer_norm(teacherFeatures, [teacherFeatures.shape[^1]], eps: options.TargetEps);

    /// <summary>MaskDistill pretrains with AdamW β 0.9/0.98.</summary>
    public double DefaultBeta2 => 0.98;

    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, ShardTargets targets) => Loss(pixels, mask, targets.RequireFeatures(Name));

    /// <param name="pixels">[B, 3, H, W], normalised for the student.</param>
    /// <param name="mask">[B, N], 1 (or true) where the patch is masked.</param>
    /// <param name="teacherFeatures">[B, N, Dt] teacher patch features of the uncorrupted image (any float type).</param>
    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, Tensor teacherFeatures)
    {
        using var scope = NewDisposeScope();
        var masked = ObjectiveInputs.Masked(pixels, mask, backbone.Config);
        if (teacherFeatures.dim() != 3 || teacherFeatures.shape[0] != masked.shape[0] || teacherFeatures.shape[1] != masked.shape[1] || teacherFeatures.shape[2] != TeacherDim)
            throw new ArgumentException($"teacher features are [{string.Join(", ", teacherFeatures.shape)}], expected [{masked.shape[0]}, {masked.shape[1]}, {TeacherDim}]");
        var tokens = MaskedPrediction.Gather(backbone.ForwardFeatures(pixels, masked), masked);
        ObjectiveInputs.CheckSomeMasked(tokens);
        var predictions = head.forward(tokens);
        var targets = NormalizeTargets(teacherFeatures.detach()[masked].to(predictions.dtype));
        var distill = nn.functional.smooth_l1_loss(predictions.to(ScalarType.Float32), targets.to(ScalarType.Float32), beta: options.Beta);
        // Smooth-ℓ1's mean runs over masked tokens × the (fixed) teacher dimension: the tokens are the items.
        return new ObjectiveLoss(distill.alias(), [new("distill", distill)], []) { Items = tokens.shape[0] }.MoveToOuterDisposeScope();
    }
}
