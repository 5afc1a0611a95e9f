using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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

    /// <summary>
    /// (v / 255 − mean) / std per channel (or v / 255), in float32 exactly as the tables hold it: the vector path
    /// computes the same single-precision operations in the same order, so both give the same bits.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void ToFloat(ReadOnlySpan<byte> planar, Span<float> target, bool imageNetStatistics)
    {
        int plane = planar.Length / 3;
        if (target.Length < planar.Length) throw new ArgumentException("target too small", nameof(target));
        for (int c = 0; c < 3; c++)
        {
            var table = imageNetStatistics ? NormalisedTables[c] : UnitTable;
            var source = planar.Slice(c * plane, plane);
            var channel = target.Slice(c * plane, plane);
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var scale = Vector256.Create(255f);
                var mean = Vector256.Create(imageNetStatistics ? ImageNetMean[c] : 0f);
                var std = Vector256.Create(imageNetStatistics ? ImageNetStd[c] : 1f);
                for (; i + 8 <= plane; i += 8)
                {
                    var bytes = Vector128.CreateScalarUnsafe(MemoryMarshal.Read<ulong>(source.Slice(i, 8))).AsByte();
                    var shorts = Vector128.WidenLower(bytes);
                    var values = Vector256.ConvertToSingle(Vector256.Create(Vector128.WidenLower(shorts), Vector128.WidenUpper(shorts)).AsInt32());
                    var unit = values / scale;
                    (imageNetStatistics ? (unit - mean) / std : unit).CopyTo(channel.Slice(i, 8));
                }
            }
            for (; i < plane; i++) channel[i] = table[source[i]];
        }
    }
}
