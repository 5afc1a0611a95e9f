using MimFlow.Core.Randomness;
using MimFlow.Data.Decoding;

namespace MimFlow.Data.Augment;

/// <summary>Draws the random decisions of one sample from its header; rendering them is <see cref="Augmenter"/>'s job.</summary>
public interface IAugmentRecipe
{
    string Name { get; }

    /// <summary>The views every sample of this recipe has, in order.</summary>
    IReadOnlyList<ViewSpec> Views { get; }

    AugmentParams Draw(ImageHeader header, ref StableRandom random);
}

/// <summary>
/// BEiT / BEiT v2 / MaskDistill pretraining: ColorJitter(0.4, 0.4, 0.4), horizontal flip 0.5, RandomResizedCrop
/// (0.08–1, 3/4–4/3) to <see cref="Size"/> bicubic, and for BEiT v1 a second view of the same crop at
/// <see cref="SecondViewSize"/> (lanczos) for the dVAE tokenizer. Jitter and flip apply to every view, as BEiT's
/// common transform precedes its two-view crop.
/// </summary>
public sealed record PretrainRecipe(int Size = 224, int? SecondViewSize = 112) : IAugmentRecipe
{
    public RandomResizedCrop Crop { get; init; } = new();
    public ColorJitter Jitter { get; init; } = new();
    public double FlipProbability { get; init; } = 0.5;

    public string Name => SecondViewSize is null ? "pretrain" : "pretrain-two-view";

    public IReadOnlyList<ViewSpec> Views => SecondViewSize is int second
        ? [new ViewSpec(Size, ResampleKernel.Bicubic), new ViewSpec(second, ResampleKernel.Lanczos3)]
        : [new ViewSpec(Size, ResampleKernel.Bicubic)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        var jitter = Jitter.Draw(ref random);
        bool flip = random.NextBool(FlipProbability);
        var crop = Crop.Draw(header.Width, header.Height, ref random);
        return new AugmentParams(crop, flip, jitter, Views);
    }
}

/// <summary>Evaluation: resize the shorter side to <see cref="ResizeTo"/> (bicubic), centre crop <see cref="CropSize"/>;
/// computed as the equivalent box of the original image, resized once.</summary>
public sealed record EvalRecipe(int ResizeTo = 256, int CropSize = 224) : IAugmentRecipe
{
    public string Name => "eval";

    public IReadOnlyList<ViewSpec> Views => [new ViewSpec(CropSize, ResampleKernel.Bicubic)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        double scale = (double)ResizeTo / Math.Min(header.Width, header.Height);
        double side = CropSize / scale;
        double width = Math.Min(side, header.Width), height = Math.Min(side, header.Height);
        var crop = new CropBox((header.Width - width) / 2, (header.Height - height) / 2, width, height);
        return new AugmentParams(crop, false, null, Views);
    }
}
