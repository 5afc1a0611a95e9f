using static TorchSharp.torch;

namespace MimFlow.Models.Backbones;

/// <summary>
/// The pixel statistics a model was trained with: ImageNet mean/std for ViTs, BEiT and VQ-KD; OpenAI CLIP's own for
/// CLIP teachers (quick-GELU ViTs). Applied on the device to pixels scaled to [0, 1].
/// </summary>
public sealed record InputStatistics(float[] Mean, float[] Std)
{
    public static InputStatistics ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);
    public static InputStatistics Clip { get; } = new([0.48145466f, 0.4578275f, 0.40821073f], [0.26862954f, 0.26130258f, 0.27577711f]);

    /// <summary>CLIP's statistics for a CLIP-style ViT (quick-GELU), ImageNet's otherwise.</summary>
    public static InputStatistics For(VitConfig config) => config.Activation == Activation.QuickGelu ? Clip : ImageNet;

    /// <summary>(x − mean) / std per channel of [B, 3, H, W] pixels in [0, 1], in their type and on their device.</summary>
    public Tensor Normalise(Tensor unit)
    {
        using var mean = tensor(Mean, [1, 3, 1, 1]).to(unit.device).to(unit.dtype);
        using var std = tensor(Std, [1, 3, 1, 1]).to(unit.device).to(unit.dtype);
        return (unit - mean) / std;
    }
}
