using MimFlow.Core.Randomness;

namespace MimFlow.Data.Masking;

/// <summary>Draws one patch mask; all randomness comes from <paramref name="random"/>, so a mask can be redrawn.</summary>
public interface IMaskGenerator
{
    PatchMask Next(ref StableRandom random);
}
