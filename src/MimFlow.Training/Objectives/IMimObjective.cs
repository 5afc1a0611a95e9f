using MimFlow.Models.Backbones;
using MimFlow.Training.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>
/// A pretraining objective: small modules (heads, a teacher) over one shared backbone, the way unilm's BEiT code
/// builds each method. The objective is a TorchSharp module registering the backbone as <c>backbone</c>, so its
/// state dict is the whole pretraining checkpoint.
/// </summary>
public interface IMimObjective
{
    /// <summary>"beit", "beitv2", "maskdistill" or "ibot".</summary>
    string Name { get; }

    VisionTransformer Backbone { get; }

    /// <summary>What the optimizer updates: the parameters that take gradients (not an EMA teacher, not a fixed gain).</summary>
    IReadOnlyList<Parameter> TrainableParameters();

    /// <summary>The initialisation the papers' code gives a fresh run, all from one seed; skip it when loading weights.</summary>
    void Initialize(long seed);

    /// <summary>AdamW's β2 in the method's recipe, unless a run sets its own.</summary>
    double DefaultBeta2 { get; }

    /// <summary>Whether the objective may compute in a bf16 copy over fp32 master weights (an objective whose own state
    /// trains beside the optimiser, such as an EMA teacher, may not).</summary>
    bool SupportsLowPrecision => true;

    /// <summary>Between backward and the optimizer step, with the gradients in place.</summary>
    void AfterBackward(StepPosition at) { }

    /// <summary>After the optimizer step, with the new weights.</summary>
    void AfterStep(StepPosition at) { }

    /// <summary>
    /// Data-parallel training: the ranks the global batch is spread over. An objective with state computed from the
    /// batch beyond its loss (iBOT's centres) sums its statistics over them so that state stays the same on every rank.
    /// </summary>
    void UseCollective(ICollective collective) { }
}

/// <summary>Where a step stands in its run, for objectives whose behaviour follows the schedule.</summary>
public readonly record struct StepPosition(long Step, long TotalSteps, int Epoch);

/// <summary>What a shard row gives an objective besides its view and mask: the tokenizer's codes [B, N] and the teacher's features [B, N, D], where stored.</summary>
public sealed record ShardTargets(Tensor? Codes, Tensor? Features)
{
    public Tensor RequireCodes(string objective) => Codes ?? throw new ArgumentException($"{objective} needs shards with codes (tokenize --tokenizer)");

    public Tensor RequireFeatures(string objective) => Features ?? throw new ArgumentException($"{objective} needs teacher features in the shards (tokenize --teacher)");
}

/// <summary>An objective that trains from pre-tokenized shards: one view per image, its mask and the stored targets.</summary>
public interface IShardObjective : IMimObjective
{
    /// <param name="pixels">[B, 3, S, S] in the objective's parameter type.</param>
    /// <param name="mask">[B, N], 1 where masked.</param>
    ObjectiveLoss Loss(Tensor pixels, Tensor mask, ShardTargets targets);
}

/// <summary>An objective that reads multi-crop views from the data pipeline: masked global crops and local crops.</summary>
public interface IMultiCropObjective : IMimObjective
{
    /// <param name="epoch">The fractional epoch, for schedules that follow it (teacher temperatures).</param>
    ObjectiveLoss Loss(IReadOnlyList<Tensor> globals, IReadOnlyList<Tensor> masks, IReadOnlyList<Tensor>? locals, double epoch);
}

internal static class ObjectiveInputs
{
    /// <summary>A [B, N] mask (bool or 0/1 of any integer type) for <paramref name="config"/>'s grid, as bool.</summary>
    public static Tensor BoolMask(Tensor mask, long batch, VitConfig config, string name = "mask")
    {
        if (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != config.NumPatches)
            throw new ArgumentException($"{name} is [{string.Join(", ", mask.shape)}], expected [{batch}, {config.NumPatches}] (batch, patches)");
        return mask.dtype == ScalarType.Bool ? mask : mask.ne(0);
    }

    /// <summary>The pixels checked and the mask as bool: what every masked-prediction loss starts from.</summary>
    public static Tensor Masked(Tensor pixels, Tensor mask, VitConfig config)
    {
        CheckPixels(pixels, config);
        return BoolMask(mask, pixels.shape[0], config);
    }

    public static void CheckPixels(Tensor pixels, VitConfig config, string name = "pixels")
    {
        if (pixels.dim() != 4 || pixels.shape[1] != config.InChannels)
            throw new ArgumentException($"{name} is [{string.Join(", ", pixels.shape)}], expected [B, {config.InChannels}, H, W]");
    }

    /// <summary>Masked positions must exist: a mean over none is NaN, which would only surface steps later.</summary>
    public static void CheckSomeMasked(Tensor gathered)
    {
        if (gathered.shape[0] == 0) throw new ArgumentException("the mask selects no patch: a masked-image-modeling loss needs masked positions");
    }

    public static Tensor Accuracy(Tensor logits, Tensor labels)
    {
        using var noGrad = no_grad();
        return logits.argmax(-1).eq(labels).to(ScalarType.Float32).mean();
    }

    /// <summary>The device of the backbone, so heads built beside an already moved backbone follow it.</summary>
    public static Device DeviceOf(nn.Module module) => module.parameters().FirstOrDefault()?.device ?? CPU;

    public static IReadOnlyList<Parameter> Trainable(nn.Module module) => module.parameters().Where(p => p.requires_grad).ToList();
}
