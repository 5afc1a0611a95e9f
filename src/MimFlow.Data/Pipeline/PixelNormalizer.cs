namespace MimFlow.Data.Pipeline;

/// <summary>Planar 8-bit RGB to float32: ImageNet mean/std normalisation (model inputs) or [0, 1] (tokenizer inputs).</summary>
public static class PixelNormalizer
{
    /// <summary>ImageNet's channel means (read-only: every normalisation in the process shares them).</summary>
    public static ReadOnlySpan<float> ImageNetMean => [0.485f, 0.456f, 0.406f];

    public static ReadOnlySpan<float> ImageNetStd => [0.229f, 0.224f, 0.225f];

    private static readonly float[][] NormalisedTables = Enumerable.Range(0, 3)
        .Select(c => Enumerable.Range(0, 256).Select(v => (v / 255f - ImageNetMean[c]) / ImageNetStd[c]).ToArray()).ToArray();

    private static readonly float[] UnitTable = Enumerable.Range(0, 256).Select(v => v / 255f).ToArray();

    public static void ToFloat(ReadOnlySpan<byte> planar, Span<float> target, bool imageNetStatistics)
    {
        int plane = planar.Length / 3;
        for (int c = 0; c < 3; c++)
        {
            var table = imageNetStatistics ? NormalisedTables[c] : UnitTable;
            var source = planar.Slice(c * plane, plane);
            var channel = target.Slice(c * plane, plane);
            for (int i = 0; i < plane; i++) channel[i] = table[source[i]];
        }
    }
}
