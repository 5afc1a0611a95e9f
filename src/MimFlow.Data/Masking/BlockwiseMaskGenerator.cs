using MimFlow.Core.Randomness;

namespace MimFlow.Data.Masking;

/// <summary>
/// BEiT's blockwise masking (Algorithm 1), as the authors' code runs it: repeatedly propose a block with a target
/// area uniform in [<see cref="MinBlockPatches"/>, remaining] and a log-uniform aspect ratio in
/// [<see cref="MinAspect"/>, 1/<see cref="MinAspect"/>]; a block is accepted if it adds between 1 and the remaining
/// number of patches; up to 10 proposals per block; stop at the target or when no block could be placed.
/// BEiT pretraining on 224/16: 14×14 grid, 75 masked patches, at least 16 patches per block, aspect 0.3.
/// </summary>
public sealed record BlockwiseMaskGenerator(int Height, int Width, int MaskedPatches, int MinBlockPatches = 16, int? MaxBlockPatches = null, double MinAspect = 0.3)
    : IMaskGenerator
{
    private const int AttemptsPerBlock = 10;

    public PatchMask Next(ref StableRandom random) => Draw(ref random, MaskedPatches);

    /// <summary>Masks up to <paramref name="target"/> patches (a real number, as iBOT passes ratio·H·W).</summary>
    internal PatchMask Draw(ref StableRandom random, double target)
    {
        var mask = new PatchMask(Height, Width);
        double logMin = Math.Log(MinAspect), logMax = Math.Log(1 / MinAspect);
        int maxPerBlock = MaxBlockPatches ?? int.MaxValue;
        while (mask.MaskedCount < target)
        {
            double remaining = Math.Min(target - mask.MaskedCount, maxPerBlock);
            int added = PlaceBlock(mask, ref random, remaining, logMin, logMax);
            if (added == 0) break;
            mask.Blocks++;
        }
        return mask;
    }

    private int PlaceBlock(PatchMask mask, ref StableRandom random, double remaining, double logMin, double logMax)
    {
        for (int attempt = 0; attempt < AttemptsPerBlock; attempt++)
        {
            // Uniform between the bounds even when remaining < minimum, as Python's random.uniform(a, b) does.
            double area = MinBlockPatches + (remaining - MinBlockPatches) * random.NextDouble();
            double aspect = Math.Exp(random.Uniform(logMin, logMax));
            int h = (int)Math.Round(Math.Sqrt(area * aspect), MidpointRounding.ToEven);
            int w = (int)Math.Round(Math.Sqrt(area / aspect), MidpointRounding.ToEven);
            if (w >= Width || h >= Height) continue;
            int top = random.NextInt(0, Height - h);
            int left = random.NextInt(0, Width - w);
            int alreadyMasked = 0;
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++)
                    if (mask[i, j]) alreadyMasked++;
            int added = h * w - alreadyMasked;
            if (added > 0 && added <= remaining)
            {
                for (int i = top; i < top + h; i++)
                    for (int j = left; j < left + w; j++)
                        mask.Set(i * Width + j);
                return added;
            }
        }
        return 0;
    }
}
