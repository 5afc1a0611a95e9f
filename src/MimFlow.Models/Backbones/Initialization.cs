using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Models.Backbones;

/// <summary>
/// BEiT's initialisation: truncated normal (std 0.02, cut at ±2σ) for linear and patch weights, [CLS], mask token,
/// position embeddings and relative position tables; zero biases; LayerNorm 1/0; LayerScale to its init value; then
/// each block's attn.proj and mlp.fc2 weights divided by √(2·layer) (BEiT's fix_init_weight). Works on any module
/// built from these parts (a ViT, or a tokenizer's encoder and decoder) by parameter name. Seeded: the same seed gives
/// the same weights on CPU.
/// </summary>
public static partial class Initialization
{
    public static void Apply(VisionTransformer model, long seed) => Apply(model, seed, model.Config.InitValues, _ => true);

    /// <param name="include">Parameters to initialise (others keep their values, e.g. a codebook).</param>
    /// <param name="rescaleResiduals">BEiT's fix_init_weight; DINO and iBOT initialise their ViTs without it.</param>
    public static void Apply(nn.Module model, long seed, double? layerScaleInit, Func<string, bool> include, bool rescaleResiduals = true)
    {
        using var noGrad = no_grad();
        var generator = new Generator((ulong)seed);
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!include(name)) continue;
            if (name.EndsWith("gamma_1", StringComparison.Ordinal) || name.EndsWith("gamma_2", StringComparison.Ordinal) || name.EndsWith(".gamma", StringComparison.Ordinal))
                parameter.fill_(layerScaleInit ?? 1.0);
            else if (name.Contains("norm", StringComparison.Ordinal))
                parameter.fill_(name.EndsWith("weight", StringComparison.Ordinal) ? 1.0 : 0.0);
            else if (name.EndsWith("bias", StringComparison.Ordinal))
                parameter.zero_();
            else
                TruncatedNormal(parameter, 0.02, generator);
        }
        if (!rescaleResiduals) return;
        foreach (var (name, parameter) in model.named_parameters())
        {
            var residualOutput = ResidualOutputWeight().Match(name);
            if (!include(name) || !residualOutput.Success) continue;
            int layer = int.Parse(residualOutput.Groups[1].Value) + 1;
            parameter.div_(Math.Sqrt(2.0 * layer));
        }
    }

    [GeneratedRegex(@"(?:^|\.)blocks\.(\d+)\.(?:attn\.proj|mlp\.fc2)\.weight$")]
    private static partial Regex ResidualOutputWeight();

    /// <summary>Normal(0, std) redrawn outside ±2·std, as timm's trunc_normal_(std, a=-2σ, b=2σ) samples it.</summary>
    private static void TruncatedNormal(Tensor target, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        var values = randn(target.shape, dtype: float32, generator: generator) * std;
        for (int round = 0; round < 20; round++)
        {
            var outside = values.abs() > 2 * std;
            if (!outside.any().item<bool>()) break;
            var redraw = randn(target.shape, dtype: float32, generator: generator) * std;
            values = where(outside, redraw, values);
        }
        target.copy_(values.clamp(-2 * std, 2 * std));
    }
}
