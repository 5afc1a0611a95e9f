using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Teachers;

/// <summary>
/// What a frozen teacher contributes per patch. <see cref="LastLayers"/> = 1 takes the last block's output after the
/// final norm (timm's forward_features: MaskDistill's CLIP target, DINO's features); k &gt; 1 averages the last k
/// blocks' outputs, each through the final norm. <see cref="Project"/> applies the model's head token-wise, as CLIP's
/// <c>encode_image(return_all_tokens)</c> does with ln_post and proj (BEiT v2's VQ-KD target: 512-d).
/// </summary>
public sealed record TeacherOptions(int LastLayers = 1, bool Project = false);

/// <summary>Patch-token targets [B, N, D] of a frozen ViT teacher (CLIP ViT-B/16, DINO ViT) for normalised pixels.</summary>
public static class TeacherFeatures
{
    public static Tensor Extract(VisionTransformer teacher, Tensor pixels, TeacherOptions options)
    {
        int depth = teacher.Config.Depth;
        if (options.LastLayers < 1 || options.LastLayers > depth)
            throw new ArgumentException($"last layers {options.LastLayers} is outside 1..{depth} (the teacher's depth)");
        using var scope = NewDisposeScope();
        var layers = Enumerable.Range(depth - options.LastLayers, options.LastLayers).ToArray();
        var (_, hidden) = teacher.ForwardLayers(pixels, mask: null, layers);
        var tokens = stack(layers.Select(layer => teacher.FinalNorm(hidden[layer])[.., 1..]).ToArray()).mean([0]);
        if (options.Project)
            tokens = teacher.ProjectTokens(tokens) ?? throw new InvalidOperationException("the teacher has no head to project with (import CLIP with its proj)");
        return tokens.MoveToOuterDisposeScope();
    }
}
