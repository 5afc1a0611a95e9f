using MimFlow.Core.Randomness;

namespace MimFlow.Data.Masking;

/// <summary>
/// iBOT's masking: per image, the prediction ratio is drawn from the list (0, 0.3 ± 0.2) as the reference
/// configuration <c>--pred_ratio 0 0.3 --pred_ratio_var 0 0.2</c> does, so half of the images stay unmasked and
/// the others get a ratio uniform in [0.1, 0.5]; blocks have at least (min(H, W) / 3)² patches, aspect 0.3..1/0.3.
/// </summary>
public sealed record IbotMaskGenerator(int Height, int Width, double Ratio = 0.3, double RatioSpread = 0.2, double UnmaskedShare = 0.5)
    : IMaskGenerator
{
    public PatchMask Next(ref StableRandom random)
    {
        double ratio = random.NextBool(UnmaskedShare) ? 0 : random.Uniform(Ratio - RatioSpread, Ratio + RatioSpread);
        int minBlock = (Math.Min(Height, Width) / 3) * (Math.Min(Height, Width) / 3);
        var blockwise = new BlockwiseMaskGenerator(Height, Width, 0, minBlock);
        return blockwise.Draw(ref random, ratio * Height * Width);
    }
}
