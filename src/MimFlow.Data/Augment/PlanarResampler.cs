using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MimFlow.Data.Decoding;

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
            // Sixteen rows when the horizontal pass can take them at once (AVX-512).
            int rowBlock = Vector512.IsHardwareAccelerated ? 2 * Lanes : Lanes;
            plan.PaddedHeight = (targetHeight + rowBlock - 1) / rowBlock * rowBlock;
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void HorizontalPass(Plan plan, float[] columns, int columnStride, Span<byte> target, int targetStride)
    {
        int taps = plan.HorizontalTaps;
        ref float input = ref MemoryMarshal.GetArrayDataReference(columns);
        ref float weights = ref MemoryMarshal.GetArrayDataReference(plan.HorizontalWeights);
        Span<Vector256<float>> tile = stackalloc Vector256<float>[Lanes];
        Span<Vector256<float>> lower = stackalloc Vector256<float>[Lanes];
        bool wide = Vector512.IsHardwareAccelerated && plan.PaddedHeight % (2 * Lanes) == 0;
        for (int oy = 0; oy < plan.PaddedHeight; oy += wide ? 2 * Lanes : Lanes)
        {
            for (int ox = 0; ox < plan.PaddedWidth; ox += Lanes)
            {
                for (int i = 0; i < Lanes; i++)
                {
                    int x = ox + i;
                    int start = plan.HorizontalStart[x];
                    if (wide)
                    {
                        // Sixteen output rows at once: the same products and sums as two passes of eight.
                        var sum = Vector512<float>.Zero;
                        for (int k = 0; k < taps; k++)
                            sum += Vector512.LoadUnsafe(ref input, (nuint)((start + k) * columnStride + oy)) * Vector512.Create(Unsafe.Add(ref weights, x * taps + k));
                        lower[i] = sum.GetLower();
                        tile[i] = sum.GetUpper();
                        continue;
                    }
                    var eight = Vector256<float>.Zero;
                    for (int k = 0; k < taps; k++)
                        eight += Vector256.LoadUnsafe(ref input, (nuint)((start + k) * columnStride + oy)) * Vector256.Create(Unsafe.Add(ref weights, x * taps + k));
                    tile[i] = eight;
                }
                if (wide)
                {
                    StoreTile(plan, lower, oy, ox, target, targetStride);
                    StoreTile(plan, tile, oy + Lanes, ox, target, targetStride);
                }
                else StoreTile(plan, tile, oy, ox, target, targetStride);
            }
        }
    }

    /// <summary>An 8×8 tile of sums (tile[i]: output column ox + i, rows oy..oy + 7) rounded, clipped and stored as rows of bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile(Plan plan, Span<Vector256<float>> tile, int oy, int ox, Span<byte> target, int targetStride)
    {
        int rows = Math.Min(Lanes, plan.TargetHeight - oy), count = Math.Min(Lanes, plan.TargetWidth - ox);
        if (rows <= 0) return;
        if (!Avx2.IsSupported || count < Lanes || target.Length < (oy + rows - 1) * targetStride + ox + Lanes)
        {
            StoreEdgeTile(tile, rows, count, target.Slice(oy * targetStride + ox), targetStride);
            return;
        }
        Transpose(tile);
        // Clipped to 0..255 first, so the saturating packs only narrow; the packs interleave 4-pixel groups of rows
        // within 128-bit lanes, and one permute puts each row's eight bytes together.
        var order = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
        var first = Avx2.PermuteVar8x32(Avx2.PackUnsignedSaturate(
            Avx2.PackSignedSaturate(Quantize(tile[0]), Quantize(tile[1])), Avx2.PackSignedSaturate(Quantize(tile[2]), Quantize(tile[3]))).AsInt32(), order).AsUInt64();
        var second = Avx2.PermuteVar8x32(Avx2.PackUnsignedSaturate(
            Avx2.PackSignedSaturate(Quantize(tile[4]), Quantize(tile[5])), Avx2.PackSignedSaturate(Quantize(tile[6]), Quantize(tile[7]))).AsInt32(), order).AsUInt64();
        ref byte origin = ref Unsafe.Add(ref MemoryMarshal.GetReference(target), oy * targetStride + ox);
        for (int j = 0; j < rows; j++)
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref origin, j * targetStride), j < 4 ? first.GetElement(j) : second.GetElement(j - 4));
    }

    /// <summary>A sum as its byte: + 0.5, clipped to 0..255, truncated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Quantize(Vector256<float> sums) =>
        Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(sums + Vector256.Create(0.5f), Vector256<float>.Zero), Vector256.Create(255f)));

    /// <summary>The image's right edge (fewer than eight columns) or a machine without AVX2: the same bytes, one at a time.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void StoreEdgeTile(Span<Vector256<float>> tile, int rows, int count, Span<byte> target, int targetStride)
    {
        for (int j = 0; j < rows; j++)
            for (int i = 0; i < count; i++)
                target[j * targetStride + i] = (byte)(int)Math.Min(Math.Max(tile[i].GetElement(j) + 0.5f, 0f), 255f);
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
        if (!Avx2.IsSupported)
        {
            TransposeOneByOne(m);
            return;
        }
        _ = m[Lanes - 1];
        var r0 = m[0].AsInt32();
        var r1 = m[1].AsInt32();
        var r2 = m[2].AsInt32();
        var r3 = m[3].AsInt32();
        var r4 = m[4].AsInt32();
        var r5 = m[5].AsInt32();
        var r6 = m[6].AsInt32();
        var r7 = m[7].AsInt32();
        Tiles.Transpose(ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7);
        m[0] = r0.AsSingle();
        m[1] = r1.AsSingle();
        m[2] = r2.AsSingle();
        m[3] = r3.AsSingle();
        m[4] = r4.AsSingle();
        m[5] = r5.AsSingle();
        m[6] = r6.AsSingle();
        m[7] = r7.AsSingle();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void TransposeOneByOne(Span<Vector256<float>> m)
    {
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
