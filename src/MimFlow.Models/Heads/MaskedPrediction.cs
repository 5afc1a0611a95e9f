using static TorchSharp.torch;

namespace MimFlow.Models.Heads;

public static class MaskedPrediction
{
    /// <summary>The patch tokens of <paramref name="states"/> [B, 1 + N, D] where <paramref name="mask"/> [B, N] is set,
    /// in row-major order: [M, D].</summary>
    public static Tensor Gather(Tensor states, Tensor mask) => states[.., 1..][mask.to(ScalarType.Bool)];
}
