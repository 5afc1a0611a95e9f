using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MimFlow.Data.Decoding;

/// <summary>
/// libjpeg's YCbCr → RGB (jdcolor.c's tables, 16-bit fixed point, computed here rather than looked up): R = Y +
/// ⌊(91881·Cr' + 2¹⁵) / 2¹⁶⌋, G = Y + ⌊(−22554·Cb' − 46802·Cr' + 2¹⁵) / 2¹⁶⌋, B = Y + ⌊(116130·Cb' + 2¹⁵) / 2¹⁶⌋ with
/// Cb' = Cb − 128, Cr' = Cr − 128, clamped to 0..255. Integer arithmetic: the same bytes everywhere.
/// </summary>
internal static class ColorConvert
{
    private const int CrR = 91881, CbB = 116130, CbG = -22554, CrG = -46802, Half = 1 << 15;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void Row(ReadOnlySpan<byte> luma, ReadOnlySpan<int> cb, ReadOnlySpan<int> cr, Span<byte> red, Span<byte> green, Span<byte> blue)
    {
        int count = luma.Length;
        if (cb.Length < count || cr.Length < count || red.Length < count || green.Length < count || blue.Length < count)
            throw new ArgumentOutOfRangeException(nameof(luma));
        int x = 0;
        if (Avx2.IsSupported)
        {
            ref byte y0 = ref MemoryMarshal.GetReference(luma);
            ref int cb0 = ref MemoryMarshal.GetReference(cb);
            ref int cr0 = ref MemoryMarshal.GetReference(cr);
            var center = Vector256.Create(128);
            var half = Vector256.Create(Half);
            var zero = Vector256<int>.Zero;
            var max = Vector256.Create(255);
            for (; x + 16 <= count; x += 16)
            {
                var bytes = Vector128.LoadUnsafe(ref y0, (nuint)x);
                var yLow = Avx2.ConvertToVector256Int32(bytes);
                var yHigh = Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(bytes, 8));
                var bLow = Vector256.LoadUnsafe(ref cb0, (nuint)x) - center;
                var bHigh = Vector256.LoadUnsafe(ref cb0, (nuint)(x + 8)) - center;
                var rLow = Vector256.LoadUnsafe(ref cr0, (nuint)x) - center;
                var rHigh = Vector256.LoadUnsafe(ref cr0, (nuint)(x + 8)) - center;
                Store(yLow + ((rLow * CrR + half) >> 16), yHigh + ((rHigh * CrR + half) >> 16), zero, max, red, x);
                Store(yLow + ((bLow * CbG + rLow * CrG + half) >> 16), yHigh + ((bHigh * CbG + rHigh * CrG + half) >> 16), zero, max, green, x);
                Store(yLow + ((bLow * CbB + half) >> 16), yHigh + ((bHigh * CbB + half) >> 16), zero, max, blue, x);
            }
        }
        for (; x < count; x++)
        {
            int y = luma[x], b = cb[x] - 128, r = cr[x] - 128;
            red[x] = (byte)Math.Clamp(y + ((r * CrR + Half) >> 16), 0, 255);
            green[x] = (byte)Math.Clamp(y + ((b * CbG + r * CrG + Half) >> 16), 0, 255);
            blue[x] = (byte)Math.Clamp(y + ((b * CbB + Half) >> 16), 0, 255);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<int> low, Vector256<int> high, Vector256<int> zero, Vector256<int> max, Span<byte> target, int x)
    {
        low = Vector256.Min(Vector256.Max(low, zero), max);
        high = Vector256.Min(Vector256.Max(high, zero), max);
        var shorts = Vector256.Narrow(low, high);
        var bytes = Vector256.Narrow(shorts, shorts);
        bytes.AsByte().GetLower().StoreUnsafe(ref MemoryMarshal.GetReference(target), (nuint)x);
    }
}

/// <summary>libjpeg's horizontal 2× "fancy" upsampling step: each output is 3/4 of the nearer and 1/4 of the further input.</summary>
internal static class ChromaUpsample
{
    /// <summary>
    /// From <paramref name="sums"/>[0 .. n + 2) (input columns −1 .. n, edges already replicated), writes 2n outputs:
    /// out[2k] = (3·s[k+1] + s[k] + <paramref name="evenBias"/>) ≫ shift, out[2k+1] = (3·s[k+1] + s[k+2] + <paramref name="oddBias"/>) ≫ shift.
    /// <paramref name="sums"/> must have 8 readable entries past n + 2 and <paramref name="output"/> 16 past 2n.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void H2(int[] sums, int n, int[] output, int evenBias, int oddBias, int shift)
    {
        if (sums.Length < n + 10 || output.Length < 2 * n + 16) throw new ArgumentOutOfRangeException(nameof(n));
        int k = 0;
        if (Avx2.IsSupported)
        {
            ref int s0 = ref MemoryMarshal.GetArrayDataReference(sums);
            ref int o0 = ref MemoryMarshal.GetArrayDataReference(output);
            var even = Vector256.Create(evenBias);
            var odd = Vector256.Create(oddBias);
            for (; k + 8 <= n; k += 8)
            {
                var previous = Vector256.LoadUnsafe(ref s0, (nuint)k);
                var current = Vector256.LoadUnsafe(ref s0, (nuint)(k + 1));
                var next = Vector256.LoadUnsafe(ref s0, (nuint)(k + 2));
                var three = current * 3;
                var e = (three + previous + even) >> shift;
                var o = (three + next + odd) >> shift;
                var low = Avx2.UnpackLow(e, o);
                var high = Avx2.UnpackHigh(e, o);
                Avx2.Permute2x128(low, high, 0x20).StoreUnsafe(ref o0, (nuint)(2 * k));
                Avx2.Permute2x128(low, high, 0x31).StoreUnsafe(ref o0, (nuint)(2 * k + 8));
            }
        }
        for (; k < n; k++)
        {
            int three = 3 * sums[k + 1];
            output[2 * k] = (three + sums[k] + evenBias) >> shift;
            output[2 * k + 1] = (three + sums[k + 2] + oddBias) >> shift;
        }
    }
}
