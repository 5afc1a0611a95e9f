using MimFlow.Models.Backbones;
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
