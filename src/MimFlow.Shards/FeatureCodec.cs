using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Shards;

/// <summary>
/// How teacher features are stored in a shard row, both ways: fp16 values, or symmetric per-token int8 (scale =
/// max|x| / 127 rounded to fp16 first, q = round(x / scale) in [−127, 127], the fp16 scales in <c>feature_scales</c>).
/// Encoding runs on the features' device, so only the stored bytes cross to the host.
/// </summary>
public static class FeatureCodec
{
    /// <summary>Features [B, N, D] (any float type, any device) as one (values, scales) pair per row; scales are null for fp16.</summary>
    public static (byte[] Features, byte[]? Scales)[] Encode(Tensor features, FeatureEncoding encoding)
    {
        using var scope = NewDisposeScope();
        int rows = checked((int)features.shape[0]);
        var values = features.to(ScalarType.Float32);
        if (encoding == FeatureEncoding.Fp16)
        {
            var flat = values.to(ScalarType.Float16).cpu().contiguous().data<Half>().ToArray();
            int perRow = flat.Length / rows;
            return Enumerable.Range(0, rows).Select(r => (MemoryMarshal.AsBytes(flat.AsSpan(r * perRow, perRow)).ToArray(), (byte[]?)null)).ToArray();
        }
        var scales = (values.abs().amax([-1], keepdim: true) / 127f).to(ScalarType.Float16).to(ScalarType.Float32).clamp_min(1e-8f);
        var q = (values / scales).round().clamp(-127, 127).to(ScalarType.Int8).cpu().contiguous().data<sbyte>().ToArray();
        var h = scales.to(ScalarType.Float16).cpu().contiguous().data<Half>().ToArray();
        int valuesPerRow = q.Length / rows, scalesPerRow = h.Length / rows;
        return Enumerable.Range(0, rows).Select(r => (
            MemoryMarshal.AsBytes(q.AsSpan(r * valuesPerRow, valuesPerRow)).ToArray(),
            (byte[]?)MemoryMarshal.AsBytes(h.AsSpan(r * scalesPerRow, scalesPerRow)).ToArray())).ToArray();
    }

    /// <summary>One row's stored features into <paramref name="target"/> (tokens × dim floats): fp16 values, or int8 values times their token's fp16 scale.</summary>
    public static void Decode(ReadOnlySpan<byte> features, ReadOnlySpan<byte> scales, Span<float> target)
    {
        if (scales.IsEmpty)
        {
            var halves = MemoryMarshal.Cast<byte, Half>(features);
            if (halves.Length != target.Length) throw new InvalidDataException($"{halves.Length} fp16 feature values, expected {target.Length}");
            for (int i = 0; i < target.Length; i++) target[i] = (float)halves[i];
            return;
        }
        var values = MemoryMarshal.Cast<byte, sbyte>(features);
        var tokenScales = MemoryMarshal.Cast<byte, Half>(scales);
        if (values.Length != target.Length || tokenScales.Length == 0 || target.Length % tokenScales.Length != 0)
            throw new InvalidDataException($"{values.Length} int8 feature values with {tokenScales.Length} scales, expected {target.Length} values");
        int dim = target.Length / tokenScales.Length;
        for (int i = 0; i < target.Length; i++) target[i] = values[i] * (float)tokenScales[i / dim];
    }
}
