using MimFlow.Models.Backbones;
using MimFlow.Models.Heads;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>BEiT v2's sizes; the defaults are the paper's (2 aggregation blocks, 8192 VQ-KD codes).</summary>
public sealed record BeitV2Options
{
    /// <summary>
    /// l as beit2's <c>--early_layers</c> counts it, 1-based: the patch states after the l-th block, which is
    /// <see cref="VisionTransformer.ForwardLayers"/>' hidden state l − 1 (beit2 keeps them where <c>i + 1 == early_layers</c>).
    /// Null: <see cref="PatchAggregation.EarlyLayer"/> (9 of 12 for base, 21 of 24 for large).
    /// </summary>
    public int? EarlyLayer { get; init; }

    public int HeadLayers { get; init; } = 2;

    public int CodebookSize { get; init; } = 8192;
}

/// <summary>
/// BEiT v2: BEiT's masked-image-modeling loss against VQ-KD codes plus the patch-aggregation loss that pretrains the
/// [CLS] token. Following unilm's beit2/modeling_pretrain.py (<c>VisionTransformerForMaskedImageModelingCLS</c> with
/// the published <c>--shared_lm_head True</c>): the last block's [CLS] state and the l-th block's patch states, both
/// before the final norm, go through the 2-block shallow Transformer, then through the backbone's own final norm
/// and the same MIM head, and are scored by cross-entropy at the masked positions against the same codes. The total
/// is the plain sum of the two mean cross-entropies (beit2/engine_for_pretraining.py: loss_1 + loss_2).
/// </summary>
/// <remarks>
/// Sharing the norm and head makes the aggregation blocks' output comparable with the final states, so only [CLS]
/// can carry what layer l's patches lack. With an average-pooling backbone (no final norm) the head's own LayerNorm
/// plays that shared role for both branches.
/// </remarks>
public sealed class BeitV2Objective : nn.Module, IShardObjective
{
    [ComponentName(Name = "backbone")] private readonly VisionTransformer backbone;
    [ComponentName(Name = "aggregation")] private readonly PatchAggregation aggregation;
    [ComponentName(Name = "head")] private readonly MimHead head;

    public BeitV2Objective(VisionTransformer backbone, BeitV2Options? options = null) : base("BeitV2Objective")
    {
        options ??= new BeitV2Options();
        var config = backbone.Config;
        if (!config.UseMaskToken) throw new ArgumentException("BEiT v2 needs a backbone with a mask token (config UseMaskToken)");
        int early = options.EarlyLayer ?? PatchAggregation.EarlyLayer(config.Depth);
        if (early < 1 || early > config.Depth) throw new ArgumentException($"early layer {early} is outside 1..{config.Depth} (1-based, as beit2's --early_layers)");
        if (options.HeadLayers < 1) throw new ArgumentException("patch aggregation needs at least one block");
        EarlyLayer = early;
        this.backbone = backbone;
        aggregation = new PatchAggregation(config, options.HeadLayers, ownNorm: false, earlyLayer: early);
        aggregation.to(ObjectiveInputs.DeviceOf(backbone));
        head = MimHeads.For(backbone, options.CodebookSize);
        RegisterComponents();
    }

    /// <summary>Keeps the aggregation blocks' draws apart from the backbone's, which start from the plain seed.</summary>
    private const ulong AggregationSeedSalt = 0x0A66_5EED;

    public string Name => "beitv2";

    /// <summary>l, 1-based.</summary>
    public int EarlyLayer { get; }

    public VisionTransformer Backbone => backbone;

    public PatchAggregation Aggregation => aggregation;

    /// <summary>The MIM head both terms share.</summary>
    public MimHead Head => head;

    public IReadOnlyList<Parameter> TrainableParameters() => ObjectiveInputs.Trainable(this);

    /// <summary>
    /// BEiT's initialisation of the backbone and head. beit2 creates the aggregation blocks after its
    /// <c>_init_weights</c> pass, so they keep PyTorch's default Linear initialisation (uniform ±1/√fan_in for weights
    /// and biases; q/v biases and relative tables zero, LayerNorm 1/0, LayerScale at its init value); it then divides
    /// their attn.proj and mlp.fc2 weights by √(2·(l + i + 1)) as if they were blocks l + i + 1. Reproduced here from
    /// the seed.
    /// </summary>
    public void Initialize(long seed)
    {
        const string prefix = "aggregation.";
        Initialization.Apply(this, seed, backbone.Config.InitValues, name => !name.StartsWith(prefix, StringComparison.Ordinal));
        using var noGrad = no_grad();
        var generator = new Generator((ulong)seed ^ AggregationSeedSalt);
        foreach (var (fullName, parameter) in named_parameters().Where(p => p.name.StartsWith(prefix, StringComparison.Ordinal)))
        {
            string name = fullName[prefix.Length..];
            if (name.EndsWith("gamma_1", StringComparison.Ordinal) || name.EndsWith("gamma_2", StringComparison.Ordinal) || name.EndsWith(".gamma", StringComparison.Ordinal))
                parameter.fill_(backbone.Config.InitValues ?? 1.0);
            else if (name.Contains("norm", StringComparison.Ordinal))
                parameter.fill_(name.EndsWith("weight", StringComparison.Ordinal) ? 1.0 : 0.0);
            else if (name.EndsWith("q_bias", StringComparison.Ordinal) || name.EndsWith("v_bias", StringComparison.Ordinal) || name.EndsWith("relative_position_bias_table", StringComparison.Ordinal))
                parameter.zero_();
            else
            {
                long fanIn = LinearFanIn(fullName, parameter);
                double bound = 1.0 / Math.Sqrt(fanIn);
                parameter.copy_(rand(parameter.shape, dtype: ScalarType.Float32, generator: generator) * (2 * bound) - bound);
            }
        }
        foreach (var (fullName, parameter) in named_parameters())
        {
            var match = System.Text.RegularExpressions.Regex.Match(fullName, @"^aggregation\.cls_pt_layers\.(\d+)\.(?:attn\.proj|mlp\.fc2)\.weight$");
            if (match.Success) parameter.div_(Math.Sqrt(2.0 * (EarlyLayer + int.Parse(match.Groups[1].Value) + 1)));
        }
    }

    /// <summary>A Linear's fan-in: the weight's second dimension, or for a bias that of the weight beside it.</summary>
    private long LinearFanIn(string name, Parameter parameter)
    {
        if (parameter.dim() == 2) return parameter.shape[1];
        string weightName = name[..name.LastIndexOf('.')] + ".weight";
        return named_parameters().First(p => p.name == weightName).parameter.shape[1];
    }

    /// <summary>BEiT v2 pretrains with AdamW β 0.9/0.98.</summary>
    public double DefaultBeta2 => 0.98;

    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, ShardTargets targets) => Loss(pixels, mask, targets.RequireCodes(Name));

    /// <param name="pixels">[B, 3, H, W], normalised.</param>
    /// <param name="mask">[B, N], 1 (or true) where the patch is masked.</param>
    /// <param name="codes">[B, N] VQ-KD codes of the uncorrupted image.</param>
    public ObjectiveLoss Loss(Tensor pixels, Tensor mask, Tensor codes)
    {
        using var scope = NewDisposeScope();
        var (masked, labels) = MimHeads.MaskedCodes(pixels, mask, codes, backbone.Config);
        int last = backbone.Config.Depth - 1, early = EarlyLayer - 1;
        var (features, hidden) = backbone.ForwardLayers(pixels, masked, early == last ? [last] : [early, last]);

        var mimLogits = head.forward(MaskedPrediction.Gather(features, masked));
        var aggregated = backbone.FinalNorm(aggregation.forward(hidden[last], hidden[early], backbone.SharedBias()));
        var aggregationLogits = head.forward(MaskedPrediction.Gather(aggregated, masked));

        var mim = MimHeads.CodeLoss(mimLogits, labels);
        var aggregationLoss = MimHeads.CodeLoss(aggregationLogits, labels);
        return new ObjectiveLoss(mim + aggregationLoss,
            [new("mim", mim), new("aggregation", aggregationLoss)],
            [new("mim_acc", ObjectiveInputs.Accuracy(mimLogits, labels)), new("aggregation_acc", ObjectiveInputs.Accuracy(aggregationLogits, labels))])
            { Items = labels.shape[0] }.MoveToOuterDisposeScope();
    }
}
