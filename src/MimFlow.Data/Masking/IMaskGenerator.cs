using MimFlow.Core.Randomness;

namespace MimFlow.Data.Masking;

/// <summary>Draws one patch mask; all randomness comes from <paramref name="random"/>, so a mask can be redrawn.</summary>
public interface IMaskGenerator
{
    /// <summary>Patch rows of the grid.</summary>
    int Height { get; }

    /// <summary>Patch columns of the grid.</summary>
    int Width { get; }

    PatchMask Next(ref StableRandom random);
}
