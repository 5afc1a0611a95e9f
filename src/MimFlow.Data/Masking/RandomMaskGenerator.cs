using MimFlow.Core.Randomness;

namespace MimFlow.Data.Masking;

/// <summary>Exactly <see cref="MaskedPatches"/> positions chosen uniformly without replacement.</summary>
public sealed record RandomMaskGenerator(int Height, int Width, int MaskedPatches) : IMaskGenerator
{
    public PatchMask Next(ref StableRandom random)
    {
        var mask = new PatchMask(Height, Width);
        int n = Height * Width;
        int[] order = Enumerable.Range(0, n).ToArray();
        // Partial Fisher–Yates: the first MaskedPatches entries are a uniform sample.
        for (int i = 0; i < Math.Min(MaskedPatches, n); i++)
        {
            int j = random.NextInt(i, n - 1);
            (order[i], order[j]) = (order[j], order[i]);
            mask.Set(order[i]);
        }
        return mask;
    }
}
