using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MimFlow.Data.Decoding;

/// <summary>
/// libjpeg's accurate integer IDCT (jpeg_idct_islow: 13-bit constants, 2 extra bits between the passes, output
/// clamped to 0..255 after +128, as libjpeg-turbo's SIMD version saturates). Integer arithmetic only, so the result is
/// the same on every machine; the AVX2 path computes 8 columns (then 8 rows) at once with the same formulas.
/// </summary>
/// <remarks>
/// libjpeg-turbo's SIMD IDCT (what libvips runs on x86 and ARM) keeps the dequantised coefficients and the first
/// pass's results in 16-bit lanes: the products wrap, the sums in0 ± in4, in7 + in3 and in5 + in1 wrap, and each pass
/// saturates to 16 bits. Its pixels equal these 32-bit formulas only while every dequantised coefficient and every
/// first-pass value lies in [−16384, 16383], where none of that can happen. Blocks a real encoder writes stay far
/// inside (|coefficient · quant| ≤ about 1,200 for 8-bit samples, first-pass values ≤ about 4,100); damaged entropy
/// data can leave it, and then <see cref="Islow"/> says so and the caller leaves the image to libvips.
/// </remarks>
internal static class InverseDct
{
    private const int ConstBits = 13, Pass1Bits = 2;
    private const int F0298 = 2446, F0390 = 3196, F0541 = 4433, F0765 = 6270, F0899 = 7373, F1175 = 9633,
        F1501 = 12299, F1847 = 15137, F1961 = 16069, F2053 = 16819, F2562 = 20995, F3072 = 25172;

    /// <summary>Values in [−<see cref="Half16"/>, <see cref="Half16"/>) are those whose pairwise sums fit 16 bits.</summary>
    private const int Half16 = 1 << 14;

    /// <summary>
    /// Dequantizes (natural-order <paramref name="quant"/>) and transforms <paramref name="block"/> into 8 rows of 8
    /// bytes. False when a dequantised coefficient or a first-pass value leaves [−16384, 16383], where libjpeg-turbo's
    /// 16-bit SIMD arithmetic gives other pixels (the output is still this exact transform's).
    /// </summary>
    public static bool Islow(ReadOnlySpan<short> block, ReadOnlySpan<int> quant, Span<byte> output, int stride) =>
        Avx2.IsSupported ? IslowAvx2(block, quant, output, stride) : IslowScalar(block, quant, output, stride);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Butterfly(
        Vector256<int> i0, Vector256<int> i1, Vector256<int> i2, Vector256<int> i3, Vector256<int> i4, Vector256<int> i5, Vector256<int> i6, Vector256<int> i7,
        out Vector256<int> o0, out Vector256<int> o1, out Vector256<int> o2, out Vector256<int> o3,
        out Vector256<int> o4, out Vector256<int> o5, out Vector256<int> o6, out Vector256<int> o7, int shift)
    {
        // Even part.
        var z1 = (i2 + i6) * F0541;
        var tmp2 = z1 + i6 * -F1847;
        var tmp3 = z1 + i2 * F0765;
        var tmp0 = (i0 + i4) << ConstBits;
        var tmp1 = (i0 - i4) << ConstBits;
        var tmp10 = tmp0 + tmp3;
        var tmp13 = tmp0 - tmp3;
        var tmp11 = tmp1 + tmp2;
        var tmp12 = tmp1 - tmp2;
        // Odd part.
        var t0 = i7;
        var t1 = i5;
        var t2 = i3;
        var t3 = i1;
        var z1o = t0 + t3;
        var z2 = t1 + t2;
        var z3 = t0 + t2;
        var z4 = t1 + t3;
        var z5 = (z3 + z4) * F1175;
        t0 *= F0298;
        t1 *= F2053;
        t2 *= F3072;
        t3 *= F1501;
        z1o *= -F0899;
        z2 *= -F2562;
        z3 *= -F1961;
        z4 *= -F0390;
        z3 += z5;
        z4 += z5;
        t0 += z1o + z3;
        t1 += z2 + z4;
        t2 += z2 + z3;
        t3 += z1o + z4;
        var round = Vector256.Create(1 << (shift - 1));
        o0 = (tmp10 + t3 + round) >> shift;
        o7 = (tmp10 - t3 + round) >> shift;
        o1 = (tmp11 + t2 + round) >> shift;
        o6 = (tmp11 - t2 + round) >> shift;
        o2 = (tmp12 + t1 + round) >> shift;
        o5 = (tmp12 - t1 + round) >> shift;
        o3 = (tmp13 + t0 + round) >> shift;
        o4 = (tmp13 - t0 + round) >> shift;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Row(ReadOnlySpan<short> block, ReadOnlySpan<int> quant, int row)
    {
        var coefficients = Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(block), (nuint)(8 * row));
        var widened = Avx2.ConvertToVector256Int32(coefficients);
        return widened * Vector256.LoadUnsafe(ref MemoryMarshal.GetReference(quant), (nuint)(8 * row));
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static bool IslowAvx2(ReadOnlySpan<short> block, ReadOnlySpan<int> quant, Span<byte> output, int stride)
    {
        if (block.Length < 64 || quant.Length < 64 || stride < 8 || output.Length < 7 * stride + 8) throw new ArgumentOutOfRangeException(nameof(output));
        // Pass 1: columns (lane = column, vector = row).
        var r0 = Row(block, quant, 0);
        var r1 = Row(block, quant, 1);
        var r2 = Row(block, quant, 2);
        var r3 = Row(block, quant, 3);
        var r4 = Row(block, quant, 4);
        var r5 = Row(block, quant, 5);
        var r6 = Row(block, quant, 6);
        var r7 = Row(block, quant, 7);
        // x + 2^14 has no bit at or above bit 15 set exactly when x is in [−2^14, 2^14).
        var bias = Vector256.Create(Half16);
        var range = ((r0 + bias) | (r1 + bias)) | ((r2 + bias) | (r3 + bias)) | ((r4 + bias) | (r5 + bias)) | ((r6 + bias) | (r7 + bias));
        Butterfly(r0, r1, r2, r3, r4, r5, r6, r7,
            out var w0, out var w1, out var w2, out var w3, out var w4, out var w5, out var w6, out var w7, ConstBits - Pass1Bits);
        range |= ((w0 + bias) | (w1 + bias)) | ((w2 + bias) | (w3 + bias)) | ((w4 + bias) | (w5 + bias)) | ((w6 + bias) | (w7 + bias));
        // Pass 2: rows (transpose so that lane = row, vector = column).
        Tiles.Transpose(ref w0, ref w1, ref w2, ref w3, ref w4, ref w5, ref w6, ref w7);
        Butterfly(w0, w1, w2, w3, w4, w5, w6, w7,
            out var c0, out var c1, out var c2, out var c3, out var c4, out var c5, out var c6, out var c7, ConstBits + Pass1Bits + 3);
        Tiles.Transpose(ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7);
        var low = Vector256.Create(-128);
        var high = Vector256.Create(127);
        var center = Vector256.Create(128);
        c0 = Vector256.Min(Vector256.Max(c0, low), high) + center;
        c1 = Vector256.Min(Vector256.Max(c1, low), high) + center;
        c2 = Vector256.Min(Vector256.Max(c2, low), high) + center;
        c3 = Vector256.Min(Vector256.Max(c3, low), high) + center;
        c4 = Vector256.Min(Vector256.Max(c4, low), high) + center;
        c5 = Vector256.Min(Vector256.Max(c5, low), high) + center;
        c6 = Vector256.Min(Vector256.Max(c6, low), high) + center;
        c7 = Vector256.Min(Vector256.Max(c7, low), high) + center;
        var rows0123 = Vector256.Narrow(Vector256.Narrow(c0, c1), Vector256.Narrow(c2, c3)).AsUInt64();
        var rows4567 = Vector256.Narrow(Vector256.Narrow(c4, c5), Vector256.Narrow(c6, c7)).AsUInt64();
        ref byte target = ref MemoryMarshal.GetReference(output);
        Unsafe.WriteUnaligned(ref target, rows0123.GetElement(0));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, stride), rows0123.GetElement(1));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 2 * stride), rows0123.GetElement(2));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 3 * stride), rows0123.GetElement(3));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 4 * stride), rows4567.GetElement(0));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 5 * stride), rows4567.GetElement(1));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 6 * stride), rows4567.GetElement(2));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref target, 7 * stride), rows4567.GetElement(3));
        return (range & Vector256.Create(-2 * Half16)) == Vector256<int>.Zero;
    }

    /// <summary>The same transform one value at a time (machines without AVX2; the tests hold the two equal).</summary>
    internal static bool IslowScalar(ReadOnlySpan<short> block, ReadOnlySpan<int> quant, Span<byte> output, int stride)
    {
        Span<int> ws = stackalloc int[64];
        Span<int> v = stackalloc int[8];
        int range = 0;
        for (int c = 0; c < 8; c++)
        {
            for (int r = 0; r < 8; r++) range |= (v[r] = block[8 * r + c] * quant[8 * r + c]) + Half16;
            ScalarButterfly(v, ConstBits - Pass1Bits);
            for (int r = 0; r < 8; r++) range |= (ws[8 * r + c] = v[r]) + Half16;
        }
        for (int r = 0; r < 8; r++)
        {
            var row = ws.Slice(8 * r, 8);
            ScalarButterfly(row, ConstBits + Pass1Bits + 3);
            for (int c = 0; c < 8; c++) output[r * stride + c] = (byte)(Math.Clamp(row[c], -128, 127) + 128);
        }
        return (range & -2 * Half16) == 0;
    }

    private static void ScalarButterfly(Span<int> v, int shift)
    {
        int z1 = (v[2] + v[6]) * F0541;
        int tmp2 = z1 + v[6] * -F1847, tmp3 = z1 + v[2] * F0765;
        int tmp0 = (v[0] + v[4]) << ConstBits, tmp1 = (v[0] - v[4]) << ConstBits;
        int tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
        int t0 = v[7], t1 = v[5], t2 = v[3], t3 = v[1];
        int za = t0 + t3, zb = t1 + t2, zc = t0 + t2, zd = t1 + t3;
        int z5 = (zc + zd) * F1175;
        t0 *= F0298; t1 *= F2053; t2 *= F3072; t3 *= F1501;
        za *= -F0899; zb *= -F2562; zc *= -F1961; zd *= -F0390;
        zc += z5; zd += z5;
        t0 += za + zc; t1 += zb + zd; t2 += zb + zc; t3 += za + zd;
        int round = 1 << (shift - 1);
        v[0] = (tmp10 + t3 + round) >> shift;
        v[7] = (tmp10 - t3 + round) >> shift;
        v[1] = (tmp11 + t2 + round) >> shift;
        v[6] = (tmp11 - t2 + round) >> shift;
        v[2] = (tmp12 + t1 + round) >> shift;
        v[5] = (tmp12 - t1 + round) >> shift;
        v[3] = (tmp13 + t0 + round) >> shift;
        v[4] = (tmp13 - t0 + round) >> shift;
    }
}
