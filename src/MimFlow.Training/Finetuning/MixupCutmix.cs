using MimFlow.Core.Randomness;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Finetuning;

/// <summary>
/// timm's <c>Mixup</c> arguments as BEiT's <c>run_class_finetuning.py</c> passes them for ImageNet (mixup α 0.8,
/// CutMix α 1.0, applied to every batch, CutMix chosen half of the time, label smoothing 0.1 folded into the soft
/// targets). Only timm's "batch" mode exists here: one draw per batch, the batch mixed with its own reverse.
/// </summary>
public sealed record MixupOptions
{
    /// <summary>Beta(α, α) for mixup's λ; 0 turns mixup off.</summary>
    public double MixupAlpha { get; init; } = 0.8;

    /// <summary>Beta(α, α) for CutMix's λ before the box correction; 0 turns CutMix off.</summary>
    public double CutmixAlpha { get; init; } = 1.0;

    /// <summary>Share of batches mixed at all (timm's <c>prob</c>, BEiT's <c>--mixup_prob</c>).</summary>
    public double Probability { get; init; } = 1.0;

    /// <summary>With both enabled, the share of mixed batches that use CutMix rather than mixup.</summary>
    public double SwitchProbability { get; init; } = 0.5;

    /// <summary>Label smoothing of the targets: off-class mass ε/K, on-class 1 − ε + ε/K (timm's <c>mixup_target</c>).</summary>
    public double LabelSmoothing { get; init; } = 0.1;

    /// <summary>λ from the area the clipped box really covers (timm's <c>correct_lam</c>, on in BEiT).</summary>
    public bool CorrectLambda { get; init; } = true;

    public void Validate()
    {
        if (!(MixupAlpha >= 0) || !(CutmixAlpha >= 0)) throw new ArgumentException($"mixup and cutmix α must not be negative (got {MixupAlpha}, {CutmixAlpha})");
        if (MixupAlpha == 0 && CutmixAlpha == 0) throw new ArgumentException("mixup needs a positive mixup or cutmix α (or turn it off)");
        if (Probability is < 0 or > 1 || SwitchProbability is < 0 or > 1) throw new ArgumentException("mixup probabilities must lie in [0, 1]");
        if (LabelSmoothing is < 0 or >= 1) throw new ArgumentException($"label smoothing must lie in [0, 1) (got {LabelSmoothing})");
    }
}

public enum MixKind { None, Mixup, Cutmix }

/// <summary>A CutMix box in pixels: rows [Top, Bottom), columns [Left, Right) (numpy slice bounds, already clipped).</summary>
public readonly record struct CutBox(int Top, int Bottom, int Left, int Right)
{
    public int Area => (Bottom - Top) * (Right - Left);
}

/// <summary>One batch's draw: the kind, the weight λ of the batch itself (the reversed batch gets 1 − λ) and CutMix's box.</summary>
public readonly record struct MixDraw(MixKind Kind, double Lambda, CutBox? Box);

/// <summary>
/// Mixup and CutMix over a batch, as timm's <c>Mixup</c> in "batch" mode (timm/data/mixup.py): a batch is mixed with
/// probability <see cref="MixupOptions.Probability"/>; then CutMix with <see cref="MixupOptions.SwitchProbability"/>
/// (λ ~ Beta(1, 1)), else mixup (λ ~ Beta(0.8, 0.8)). Mixup blends every image with the image at the mirrored
/// position of the batch, λ·x + (1 − λ)·flip(x); CutMix pastes the mirrored image into a box of side
/// <c>int(side·√(1 − λ))</c> centred at a uniform pixel and clipped to the image, and λ becomes 1 − box area / image
/// area. Targets are timm's <c>mixup_target</c>: λ·smooth(y) + (1 − λ)·smooth(flip(y)).
/// <para>
/// Randomness is explicit: every decision comes from the <see cref="StableRandom"/> the caller passes — the
/// fine-tuner derives one from (seed, step) — in timm's order of draws (apply?, CutMix?, λ, box centre row, column),
/// so a run and its replay mix identically and nothing reads a global generator. timm asserts an even batch; an odd
/// batch is allowed here, its middle image being mixed with itself.
/// </para>
/// </summary>
public sealed class MixupCutmix
{
    public MixupCutmix(MixupOptions options, int classes)
    {
        options.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        Options = options;
        Classes = classes;
    }

    public MixupOptions Options { get; }

    public int Classes { get; }

    /// <summary>The draw for a batch of <paramref name="height"/>×<paramref name="width"/> images (timm's <c>_params_per_batch</c> and box).</summary>
    public MixDraw Draw(int height, int width, ref StableRandom random)
    {
        if (!(random.NextDouble() < Options.Probability)) return new MixDraw(MixKind.None, 1.0, null);
        bool cutmix;
        double lambda;
        if (Options.MixupAlpha > 0 && Options.CutmixAlpha > 0)
        {
            cutmix = random.NextDouble() < Options.SwitchProbability;
            lambda = cutmix ? SampleBeta(ref random, Options.CutmixAlpha, Options.CutmixAlpha) : SampleBeta(ref random, Options.MixupAlpha, Options.MixupAlpha);
        }
        else if (Options.MixupAlpha > 0)
        {
            cutmix = false;
            lambda = SampleBeta(ref random, Options.MixupAlpha, Options.MixupAlpha);
        }
        else
        {
            cutmix = true;
            lambda = SampleBeta(ref random, Options.CutmixAlpha, Options.CutmixAlpha);
        }
        // timm returns before drawing a box when λ is exactly 1 (nothing to mix).
        if (lambda == 1.0) return new MixDraw(MixKind.None, 1.0, null);
        if (!cutmix) return new MixDraw(MixKind.Mixup, lambda, null);
        int centreRow = random.NextInt(height), centreColumn = random.NextInt(width);
        var box = CutmixBox(height, width, lambda, centreRow, centreColumn);
        return new MixDraw(MixKind.Cutmix, Options.CorrectLambda ? CorrectedLambda(box, height, width) : lambda, box);
    }

    /// <summary>
    /// Mixes <paramref name="pixels"/> [B, C, H, W] (a new tensor; the input is left as it is) and returns the soft
    /// targets [B, K] (float32) for <paramref name="labels"/> [B] (int64), with the draw that was used.
    /// </summary>
    public (Tensor Pixels, Tensor Targets, MixDraw Draw) Apply(Tensor pixels, Tensor labels, ref StableRandom random)
    {
        var draw = Draw((int)pixels.shape[^2], (int)pixels.shape[^1], ref random);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var mixed = Mix(pixels, draw);
        var targets = Targets(labels, Classes, draw.Lambda, Options.LabelSmoothing);
        return (mixed.MoveToOuterDisposeScope(), targets.MoveToOuterDisposeScope(), draw);
    }

    /// <summary>The batch mixed with its reverse as <paramref name="draw"/> says (a copy when nothing is mixed).</summary>
    public static Tensor Mix(Tensor pixels, MixDraw draw)
    {
        using var scope = NewDisposeScope();
        Tensor mixed;
        switch (draw.Kind)
        {
            case MixKind.Mixup:
                mixed = pixels.mul(draw.Lambda).add_(pixels.flip(0).mul_(1.0 - draw.Lambda));
                break;
            case MixKind.Cutmix when draw.Box is { Area: > 0 } box:
                mixed = pixels.clone();
                var flipped = pixels.flip(0);
                int rows = box.Bottom - box.Top, columns = box.Right - box.Left;
                mixed.narrow(2, box.Top, rows).narrow(3, box.Left, columns).copy_(flipped.narrow(2, box.Top, rows).narrow(3, box.Left, columns));
                break;
            default:
                mixed = pixels.clone();
                break;
        }
        return mixed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// timm's <c>rand_bbox</c> for a given centre: a box of <c>int(H·√(1 − λ))</c> × <c>int(W·√(1 − λ))</c> around
    /// (<paramref name="centreRow"/>, <paramref name="centreColumn"/>), each bound centre ± side // 2, clipped to the image.
    /// </summary>
    public static CutBox CutmixBox(int height, int width, double lambda, int centreRow, int centreColumn)
    {
        double ratio = Math.Sqrt(1 - lambda);
        int cutHeight = (int)(height * ratio), cutWidth = (int)(width * ratio);
        return new CutBox(
            Math.Clamp(centreRow - cutHeight / 2, 0, height), Math.Clamp(centreRow + cutHeight / 2, 0, height),
            Math.Clamp(centreColumn - cutWidth / 2, 0, width), Math.Clamp(centreColumn + cutWidth / 2, 0, width));
    }

    /// <summary>timm's <c>correct_lam</c>: the share of the image the batch keeps, 1 − box area / image area.</summary>
    public static double CorrectedLambda(CutBox box, int height, int width) => 1.0 - box.Area / (double)(height * width);

    /// <summary>
    /// timm's <c>mixup_target</c>: λ·onehot(y) + (1 − λ)·onehot(flip(y)), each one-hot smoothed to
    /// off = ε/K and on = 1 − ε + ε/K, so every row sums to 1. With λ = 1 this is plain label smoothing, which equals
    /// timm's <c>LabelSmoothingCrossEntropy</c> under the soft-target cross-entropy.
    /// </summary>
    public static Tensor Targets(Tensor labels, int classes, double lambda, double smoothing)
    {
        using var scope = NewDisposeScope();
        var first = SmoothedOneHot(labels, classes, smoothing);
        var targets = lambda == 1.0 ? first : first.mul(lambda).add_(SmoothedOneHot(labels.flip(0), classes, smoothing).mul_(1.0 - lambda));
        return targets.MoveToOuterDisposeScope();
    }

    /// <summary>One-hot rows [B, K] (float32) with on = 1 − ε + ε/K and off = ε/K (exactly those floats, as timm's scatter).</summary>
    public static Tensor SmoothedOneHot(Tensor labels, int classes, double smoothing)
    {
        using var scope = NewDisposeScope();
        double off = smoothing / classes, on = 1.0 - smoothing + off;
        var hot = nn.functional.one_hot(labels.to(ScalarType.Int64), classes).to(ScalarType.Float32);
        // hot·on + (1 − hot)·off: each element is exactly on or off (a 0 factor contributes an exact 0).
        return hot.mul(on).add_(hot.neg().add_(1.0).mul_(off)).MoveToOuterDisposeScope();
    }

    /// <summary>timm's <c>SoftTargetCrossEntropy</c>: mean over rows of Σₖ −tₖ·log softmax(z)ₖ.</summary>
    public static Tensor SoftTargetCrossEntropy(Tensor logits, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var perRow = targets.neg().mul_(nn.functional.log_softmax(logits, -1)).sum(-1);
        return perRow.mean().MoveToOuterDisposeScope();
    }

    /// <summary>Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) (numpy draws Beta the same way).</summary>
    public static double SampleBeta(ref StableRandom random, double a, double b)
    {
        double x = SampleGamma(ref random, a), y = SampleGamma(ref random, b);
        return x + y > 0 ? x / (x + y) : (random.NextDouble() < a / (a + b) ? 1.0 : 0.0);
    }

    /// <summary>
    /// Gamma(shape, 1) by Marsaglia and Tsang's squeeze method; shapes below 1 through Gamma(shape + 1)·U^(1/shape).
    /// Not numpy's bit stream (StableRandom is not numpy's generator), the same distribution.
    /// </summary>
    public static double SampleGamma(ref StableRandom random, double shape)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shape);
        if (shape < 1)
        {
            double boost = Math.Pow(1.0 - random.NextDouble(), 1.0 / shape);
            return SampleGamma(ref random, shape + 1) * boost;
        }
        double d = shape - 1.0 / 3, c = 1 / Math.Sqrt(9 * d);
        while (true)
        {
            double x = random.NextGaussian();
            double v = 1 + c * x;
            if (v <= 0) continue;
            v = v * v * v;
            double u = 1.0 - random.NextDouble();
            if (u < 1 - 0.0331 * x * x * x * x) return d * v;
            if (Math.Log(u) < 0.5 * x * x + d * (1 - v + Math.Log(v))) return d * v;
        }
    }
}
