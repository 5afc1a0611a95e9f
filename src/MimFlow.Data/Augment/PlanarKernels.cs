using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MimFlow.Data.Augment;

/// <summary>Vectorised per-pixel kernels on planar 8-bit RGB, in the same integer arithmetic as the interleaved ops.</summary>
internal static class PlanarKernels
{
    private const int R = 19595, G = 38470, B = 7471, Round = 0x8000;

    /// <summary>Σ PIL luma (ITU-R 601-2, 16-bit fixed point) over the pixels.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static long LumaSum(ReadOnlySpan<byte> red, ReadOnlySpan<byte> green, ReadOnlySpan<byte> blue)
    {
        int n = red.Length, i = 0;
        long sum = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var total = Vector256<long>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                var luma = Luma(Load(red, i), Load(green, i), Load(blue, i));
                var (low, high) = Vector256.Widen(luma);
                total += low + high;
            }
            sum = Vector256.Sum(total);
        }
        for (; i < n; i++) sum += PixelOp.Luma(red[i], green[i], blue[i]);
        return sum;
    }

    /// <summary>PIL ImageEnhance.Color with a 16-bit fixed-point factor: each channel blends with the pixel's grey.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void Saturate(Span<byte> red, Span<byte> green, Span<byte> blue, int factor)
    {
        int n = red.Length, i = 0;
        if (Vector512.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
        {
            // Sixteen pixels at a time, the same integer arithmetic as the eight-pixel loop below.
            var f = Vector512.Create(factor);
            var round = Vector512.Create(Round);
            for (; i + 16 <= n; i += 16)
            {
                var r = Load16(red, i);
                var g = Load16(green, i);
                var b = Load16(blue, i);
                var grey = (r * R + g * G + b * B + round) >> 16;
                var greyFixed = (grey << 16) + round;
                Store16((greyFixed + f * (r - grey)) >> 16, red, i);
                Store16((greyFixed + f * (g - grey)) >> 16, green, i);
                Store16((greyFixed + f * (b - grey)) >> 16, blue, i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var f = Vector256.Create(factor);
            var round = Vector256.Create(Round);
            for (; i + 8 <= n; i += 8)
            {
                var r = Load(red, i);
                var g = Load(green, i);
                var b = Load(blue, i);
                var grey = Luma(r, g, b);
                var greyFixed = (grey << 16) + round;
                Store((greyFixed + f * (r - grey)) >> 16, red, i);
                Store((greyFixed + f * (g - grey)) >> 16, green, i);
                Store((greyFixed + f * (b - grey)) >> 16, blue, i);
            }
        }
        for (; i < n; i++)
        {
            int grey = PixelOp.Luma(red[i], green[i], blue[i]);
            int greyFixed = (grey << 16) + Round;
            red[i] = (byte)Math.Clamp((greyFixed + factor * (red[i] - grey)) >> 16, 0, 255);
            green[i] = (byte)Math.Clamp((greyFixed + factor * (green[i] - grey)) >> 16, 0, 255);
            blue[i] = (byte)Math.Clamp((greyFixed + factor * (blue[i] - grey)) >> 16, 0, 255);
        }
    }

    private static Vector256<int> Luma(Vector256<int> r, Vector256<int> g, Vector256<int> b) =>
        (r * R + g * G + b * B + Vector256.Create(Round)) >> 16;

    private static Vector256<int> Load(ReadOnlySpan<byte> plane, int i)
    {
        var bytes = Vector128.CreateScalarUnsafe(MemoryMarshal.Read<ulong>(plane.Slice(i, 8))).AsByte();
        var shorts = Vector128.WidenLower(bytes);
        return Vector256.Create(Vector128.WidenLower(shorts), Vector128.WidenUpper(shorts)).AsInt32();
    }

    private static Vector512<int> Load16(ReadOnlySpan<byte> plane, int i) =>
        System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512Int32(Vector128.Create(plane.Slice(i, 16)));

    private static void Store16(Vector512<int> values, Span<byte> plane, int i) =>
        System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector128Byte(Vector512.Min(Vector512.Max(values, Vector512<int>.Zero), Vector512.Create(255)))
            .CopyTo(plane.Slice(i, 16));

    private static void Store(Vector256<int> values, Span<byte> plane, int i)
    {
        values = Vector256.Min(Vector256.Max(values, Vector256<int>.Zero), Vector256.Create(255));
        var shorts = Vector256.Narrow(values, values);
        var bytes = Vector256.Narrow(shorts, shorts).AsByte();
        MemoryMarshal.Write(plane.Slice(i, 8), bytes.AsUInt64().GetElement(0));
    }
}
