using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MimFlow.Data.Augment;

/// <summary>
/// <see cref="Resampler"/>'s antialiased resampling (PIL's kernels, support stretched by the scale when shrinking,
/// weights normalised per output pixel, no rounding between the passes) on one 8-bit plane, vectorised: the
/// vertical pass runs 8 columns at a time and is transposed in 8×8 tiles, so the horizontal pass also runs on
/// contiguous vectors (8 output rows at a time), and transposed back when stored. Every sum is taken in the same
/// order with separate multiplies and adds (no fused multiply-add), so the bytes are the same on every machine
/// whatever its vector width.
/// </summary>
public static class PlanarResampler
{
    private const int Lanes = 8;

    /// <summary>
    /// Resizes the (fractional) <paramref name="box"/> of a <paramref name="sourceWidth"/> × <paramref name="sourceHeight"/>
    /// plane into a <paramref name="targetWidth"/> × <paramref name="targetHeight"/> plane written with row stride
    /// <paramref name="targetStride"/>.
    /// </summary>
    public static void Resize(ReadOnlySpan<byte> source, int sourceWidth, int sourceHeight, CropBox box,
        Span<byte> target, int targetWidth, int targetHeight, int targetStride, ResampleKernel kernel)
    {
        var plan = Plan.For(sourceWidth, sourceHeight, box, targetWidth, targetHeight, kernel);
        Resize(plan, source, target, targetStride);
    }

    /// <summary>Taps for both axes, padded to whole vectors; one plan serves the three planes of a view.</summary>
    public sealed class Plan
    {
        internal int SourceWidth, SourceHeight, TargetWidth, TargetHeight;
        internal int PaddedWidth, PaddedHeight;
        internal int FirstColumn, Columns, PaddedColumns;
        internal int VerticalTaps, HorizontalTaps;
        internal int[] VerticalStart = [], HorizontalStart = [];
        internal float[] VerticalWeights = [], HorizontalWeights = [];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static Plan For(int sourceWidth, int sourceHeight, CropBox box, int targetWidth, int targetHeight, ResampleKernel kernel)
        {
            if (sourceWidth < 1 || sourceHeight < 1 || targetWidth < 1 || targetHeight < 1) throw new ArgumentOutOfRangeException(nameof(targetWidth));
            var plan = new Plan { SourceWidth = sourceWidth, SourceHeight = sourceHeight, TargetWidth = targetWidth, TargetHeight = targetHeight };
            plan.PaddedWidth = (targetWidth + Lanes - 1) / Lanes * Lanes;
            plan.PaddedHeight = (targetHeight + Lanes - 1) / Lanes * Lanes;
            (plan.VerticalStart, plan.VerticalWeights, plan.VerticalTaps) = Taps(sourceHeight, box.Y, box.Bottom, targetHeight, plan.PaddedHeight, kernel);
            (plan.HorizontalStart, plan.HorizontalWeights, plan.HorizontalTaps) = Taps(sourceWidth, box.X, box.Right, targetWidth, plan.PaddedWidth, kernel);
            int first = int.MaxValue, last = 0;
            for (int x = 0; x < plan.PaddedWidth; x++)
            {
                first = Math.Min(first, plan.HorizontalStart[x]);
                last = Math.Max(last, plan.HorizontalStart[x] + plan.HorizontalTaps);
            }
            plan.FirstColumn = first;
            plan.Columns = last - first;
            plan.PaddedColumns = (plan.Columns + 15) / 16 * 16;
            for (int x = 0; x < plan.PaddedWidth; x++) plan.HorizontalStart[x] -= first;
            return plan;
        }

        /// <summary>
        /// PIL's precompute_coeffs for one axis, as <see cref="Resampler"/> computes them, laid out with a common
        /// tap count per output: a window that would run past the input is moved inside it and its weights shifted
        /// (zero weights add nothing, so the sums are those of the exact windows). Outputs past <paramref name="outSize"/>
        /// (vector padding) repeat the last one.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static (int[] Start, float[] Weights, int Taps) Taps(int inSize, double in0, double in1, int outSize, int paddedSize, ResampleKernel kernel)
        {
            var exact = Resampler.Compute(inSize, in0, in1, outSize, kernel);
            int[] starts = exact.Start, counts = exact.Count;
            float[] raw = exact.Weights;
            int width = exact.Width;
            int taps = 1;
            foreach (int n in counts) taps = Math.Max(taps, n);
            taps = Math.Min(taps, inSize);
            var start = new int[paddedSize];
            var weights = new float[paddedSize * taps];
            for (int i = 0; i < paddedSize; i++)
            {
                int o = Math.Min(i, outSize - 1);
                int s = Math.Min(starts[o], inSize - taps);
                start[i] = s;
                for (int k = 0; k < counts[o]; k++) weights[i * taps + starts[o] - s + k] = raw[o * width + k];
            }
            return (start, weights, taps);
        }
    }

    /// <param name="target">The output plane's first byte; rows <paramref name="targetStride"/> apart.</param>
    public static void Resize(Plan plan, ReadOnlySpan<byte> source, Span<byte> target, int targetStride)
    {
        if (source.Length < plan.SourceWidth * plan.SourceHeight) throw new ArgumentException("source plane too small", nameof(source));
        if (target.Length < (plan.TargetHeight - 1) * targetStride + plan.TargetWidth) throw new ArgumentException("target plane too small", nameof(target));
        // Vertical pass, stored transposed: columns[x][y] for the source columns the horizontal taps read.
        int columnStride = plan.PaddedHeight;
        float[] columns = ArrayPool<float>.Shared.Rent(plan.PaddedColumns * columnStride);
        try
        {
            VerticalPass(plan, source, columns, columnStride);
            HorizontalPass(plan, columns, columnStride, target, targetStride);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(columns);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void VerticalPass(Plan plan, ReadOnlySpan<byte> source, float[] columns, int columnStride)
    {
        int taps = plan.VerticalTaps, width = plan.SourceWidth;
        // The rows the taps read, as floats, over the columns the horizontal taps read (padded to 16 with zeros).
        int firstRow = plan.VerticalStart[0], lastRow = plan.VerticalStart[plan.PaddedHeight - 1] + taps;
        for (int y = 0; y < plan.PaddedHeight; y++) firstRow = Math.Min(firstRow, plan.VerticalStart[y]);
        int stride = (plan.Columns + 15) / 16 * 16;
        float[] rows = ArrayPool<float>.Shared.Rent((lastRow - firstRow) * stride);
        try
        {
            for (int y = firstRow; y < lastRow; y++)
            {
                var bytes = source.Slice(y * width + plan.FirstColumn, plan.Columns);
                var floats = rows.AsSpan((y - firstRow) * stride, stride);
                int x = 0;
                for (; x + 8 <= bytes.Length; x += 8) Load8(ref MemoryMarshal.GetReference(bytes), x).CopyTo(floats.Slice(x, 8));
                for (; x < bytes.Length; x++) floats[x] = bytes[x];
                floats[bytes.Length..].Clear();
            }
            ref float input = ref MemoryMarshal.GetArrayDataReference(rows);
            ref float weights = ref MemoryMarshal.GetArrayDataReference(plan.VerticalWeights);
            ref float output = ref MemoryMarshal.GetArrayDataReference(columns);
            Span<Vector256<float>> left = stackalloc Vector256<float>[Lanes];
            Span<Vector256<float>> right = stackalloc Vector256<float>[Lanes];
            for (int cx = 0; cx < stride; cx += 2 * Lanes)
            {
                for (int oy = 0; oy < plan.PaddedHeight; oy += Lanes)
                {
                    for (int j = 0; j < Lanes; j++)
                    {
                        int y = oy + j;
                        int start = (plan.VerticalStart[y] - firstRow) * stride + cx;
                        if (Vector512.IsHardwareAccelerated)
                        {
                            // The same products and sums, 16 lanes at once.
                            var sum = Vector512<float>.Zero;
                            for (int k = 0; k < taps; k++)
                                sum += Vector512.LoadUnsafe(ref input, (nuint)(start + k * stride)) * Vector512.Create(Unsafe.Add(ref weights, y * taps + k));
                            left[j] = sum.GetLower();
                            right[j] = sum.GetUpper();
                            continue;
                        }
                        var a = Vector256<float>.Zero;
                        var b = Vector256<float>.Zero;
                        for (int k = 0; k < taps; k++)
                        {
                            var w = Vector256.Create(Unsafe.Add(ref weights, y * taps + k));
                            a += Vector256.LoadUnsafe(ref input, (nuint)(start + k * stride)) * w;
                            b += Vector256.LoadUnsafe(ref input, (nuint)(start + k * stride + Lanes)) * w;
                        }
                        left[j] = a;
                        right[j] = b;
                    }
                    Transpose(left);
                    Transpose(right);
                    for (int i = 0; i < Lanes; i++)
                    {
                        left[i].StoreUnsafe(ref output, (nuint)((cx + i) * columnStride + oy));
                        right[i].StoreUnsafe(ref output, (nuint)((cx + Lanes + i) * columnStride + oy));
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rows);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void HorizontalPass(Plan plan, float[] columns, int columnStride, Span<byte> target, int targetStride)
    {
        int taps = plan.HorizontalTaps;
        ref float input = ref MemoryMarshal.GetArrayDataReference(columns);
        ref float weights = ref MemoryMarshal.GetArrayDataReference(plan.HorizontalWeights);
        Span<Vector256<float>> tile = stackalloc Vector256<float>[Lanes];
        Span<byte> row = stackalloc byte[Lanes];
        var half = Vector256.Create(0.5f);
        var zero = Vector256<float>.Zero;
        var max = Vector256.Create(255f);
        for (int oy = 0; oy < plan.PaddedHeight; oy += Lanes)
        {
            for (int ox = 0; ox < plan.PaddedWidth; ox += Lanes)
            {
                for (int i = 0; i < Lanes; i++)
                {
                    int x = ox + i;
                    int start = plan.HorizontalStart[x];
                    var sum = Vector256<float>.Zero;
                    for (int k = 0; k < taps; k++)
                    {
                        var w = Vector256.Create(Unsafe.Add(ref weights, x * taps + k));
                        sum += Vector256.LoadUnsafe(ref input, (nuint)((start + k) * columnStride + oy)) * w;
                    }
                    tile[i] = sum;
                }
                Transpose(tile);
                int rows = Math.Min(Lanes, plan.TargetHeight - oy), count = Math.Min(Lanes, plan.TargetWidth - ox);
                for (int j = 0; j < rows; j++)
                {
                    var v = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(tile[j] + half, zero), max));
                    var bytes = Vector256.Narrow(Vector256.Narrow(v, v), Vector256.Narrow(v, v)).AsByte();
                    var destination = target.Slice((oy + j) * targetStride + ox);
                    if (count == Lanes && destination.Length >= Lanes) Unsafe.WriteUnaligned(ref MemoryMarshal.GetReference(destination), bytes.AsUInt64().GetElement(0));
                    else
                    {
                        Unsafe.WriteUnaligned(ref MemoryMarshal.GetReference(row), bytes.AsUInt64().GetElement(0));
                        row[..count].CopyTo(destination);
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load8(ref byte source, int offset)
    {
        var bytes = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref source, offset))).AsByte();
        var shorts = Vector128.WidenLower(bytes);
        return Vector256.ConvertToSingle(Vector256.Create(Vector128.WidenLower(shorts), Vector128.WidenUpper(shorts)).AsInt32());
    }

    /// <summary>8×8 transpose of the tile (row i becomes column i).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose(Span<Vector256<float>> m)
    {
        if (Avx.IsSupported)
        {
            var t0 = Avx.UnpackLow(m[0], m[1]);
            var t1 = Avx.UnpackHigh(m[0], m[1]);
            var t2 = Avx.UnpackLow(m[2], m[3]);
            var t3 = Avx.UnpackHigh(m[2], m[3]);
            var t4 = Avx.UnpackLow(m[4], m[5]);
            var t5 = Avx.UnpackHigh(m[4], m[5]);
            var t6 = Avx.UnpackLow(m[6], m[7]);
            var t7 = Avx.UnpackHigh(m[6], m[7]);
            var u0 = Avx.Shuffle(t0, t2, 0x44);
            var u1 = Avx.Shuffle(t0, t2, 0xEE);
            var u2 = Avx.Shuffle(t1, t3, 0x44);
            var u3 = Avx.Shuffle(t1, t3, 0xEE);
            var u4 = Avx.Shuffle(t4, t6, 0x44);
            var u5 = Avx.Shuffle(t4, t6, 0xEE);
            var u6 = Avx.Shuffle(t5, t7, 0x44);
            var u7 = Avx.Shuffle(t5, t7, 0xEE);
            m[0] = Avx.Permute2x128(u0, u4, 0x20);
            m[1] = Avx.Permute2x128(u1, u5, 0x20);
            m[2] = Avx.Permute2x128(u2, u6, 0x20);
            m[3] = Avx.Permute2x128(u3, u7, 0x20);
            m[4] = Avx.Permute2x128(u0, u4, 0x31);
            m[5] = Avx.Permute2x128(u1, u5, 0x31);
            m[6] = Avx.Permute2x128(u2, u6, 0x31);
            m[7] = Avx.Permute2x128(u3, u7, 0x31);
            return;
        }
        Span<float> values = stackalloc float[Lanes * Lanes];
        Span<float> column = stackalloc float[Lanes];
        for (int i = 0; i < Lanes; i++) m[i].CopyTo(values.Slice(i * Lanes, Lanes));
        for (int i = 0; i < Lanes; i++)
        {
            for (int j = 0; j < Lanes; j++) column[j] = values[j * Lanes + i];
            m[i] = Vector256.Create<float>(column);
        }
    }
}
