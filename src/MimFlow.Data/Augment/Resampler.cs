using System.Numerics;
using System.Runtime.InteropServices;

namespace MimFlow.Data.Augment;

/// <summary>
/// Separable, antialiased resampling of 8-bit RGB as PIL's <c>Image.resize</c> does it: for downscaling the kernel
/// is stretched by the scale factor (so every input pixel contributes), weights are normalised per output pixel,
/// and the result is rounded and clipped. Horizontal pass first (into float rows of the output width), then a
/// vertical pass vectorised across each output row. Running it in managed code saves a libvips pipeline (and its
/// thread hand-off) per image.
/// </summary>
public static class Resampler
{
    internal sealed record Taps(int[] Start, int[] Count, float[] Weights, int Width);

    public static double Support(ResampleKernel kernel) => kernel switch
    {
        ResampleKernel.Lanczos3 => 3,
        ResampleKernel.Bicubic => 2,
        ResampleKernel.Bilinear => 1,
        _ => 0.5,
    };

    // Per image, from the first: optimised at once rather than after the runtime's call counting, which a loader's
    // stream of new async and generic code keeps restarting.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization | System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static double Weight(ResampleKernel kernel, double x)
    {
        x = Math.Abs(x);
        switch (kernel)
        {
            case ResampleKernel.Bicubic:
                const double a = -0.5;
                if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
                if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
                return 0;
            case ResampleKernel.Lanczos3:
                return x < 3 ? Sinc(x) * Sinc(x / 3) : 0;
            case ResampleKernel.Bilinear:
                return x < 1 ? 1 - x : 0;
            default:
                return x <= 0.5 ? 1 : 0;
        }
    }

    private static double Sinc(double x)
    {
        if (x == 0) return 1;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    /// <summary>PIL's <c>precompute_coeffs</c>: the input window and normalised weights of each output pixel, for
    /// the source interval [<paramref name="in0"/>, <paramref name="in1"/>) of an axis of <paramref name="inSize"/> pixels.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static Taps Compute(int inSize, double in0, double in1, int outSize, ResampleKernel kernel)
    {
        double scale = (in1 - in0) / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support(kernel) * filterScale;
        int width = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var weights = new float[outSize * width];
        var w = new double[width];
        for (int i = 0; i < outSize; i++)
        {
            double center = in0 + (i + 0.5) * scale;
            int min = Math.Max((int)(center - support + 0.5), 0);
            int max = Math.Min((int)(center + support + 0.5), inSize);
            int n = Math.Min(max - min, width);
            double total = 0;
            for (int k = 0; k < n; k++)
            {
                w[k] = Weight(kernel, (k + min - center + 0.5) / filterScale);
                total += w[k];
            }
            if (n == 0 || total == 0)
            {
                // A nearest-neighbour kernel narrower than a pixel: take the pixel under the centre.
                min = Math.Clamp((int)center, 0, inSize - 1);
                n = 1;
                weights[i * width] = 1;
            }
            else
            {
                for (int k = 0; k < n; k++) weights[i * width + k] = (float)(w[k] / total);
            }
            start[i] = min;
            count[i] = n;
        }
        return new Taps(start, count, weights, width);
    }

    /// <summary>Resizes interleaved RGB <paramref name="source"/> (rows of <paramref name="sourceStride"/> bytes) into
    /// <paramref name="target"/> (<paramref name="targetWidth"/> × <paramref name="targetHeight"/> × 3).</summary>
    public static void ResizeRgb(ReadOnlySpan<byte> source, int sourceWidth, int sourceHeight, int sourceStride,
        Span<byte> target, int targetWidth, int targetHeight, ResampleKernel kernel) =>
        ResizeRgb(source, sourceWidth, sourceHeight, sourceStride, new CropBox(0, 0, sourceWidth, sourceHeight), target, targetWidth, targetHeight, kernel);

    /// <summary>Resizes the (possibly fractional) <paramref name="box"/> of <paramref name="source"/>, as PIL's
    /// <c>resize(size, box=…)</c>. The scalar horizontal pass runs on whichever side has fewer rows: before the
    /// vectorised vertical pass when the height grows, after it when the height shrinks.</summary>
    public static void ResizeRgb(ReadOnlySpan<byte> source, int sourceWidth, int sourceHeight, int sourceStride, CropBox box,
        Span<byte> target, int targetWidth, int targetHeight, ResampleKernel kernel)
    {
        var horizontal = Compute(sourceWidth, box.X, box.Right, targetWidth, kernel);
        var vertical = Compute(sourceHeight, box.Y, box.Bottom, targetHeight, kernel);
        int firstRow = vertical.Start[0];
        int lastRow = vertical.Start[targetHeight - 1] + vertical.Count[targetHeight - 1];
        int rowsUsed = lastRow - firstRow;
        bool verticalFirst = rowsUsed > targetHeight;
        // Vertical-first works on the source columns the horizontal pass reads.
        int firstColumn = horizontal.Start[0];
        int lastColumn = horizontal.Start[targetWidth - 1] + horizontal.Count[targetWidth - 1];
        int width = verticalFirst ? lastColumn - firstColumn : targetWidth;
        int rowFloats = width * 3;
        float[] rows = System.Buffers.ArrayPool<float>.Shared.Rent((verticalFirst ? rowsUsed : sourceHeight) * rowFloats);
        float[] accumulator = System.Buffers.ArrayPool<float>.Shared.Rent(Math.Max(rowFloats, targetWidth * 3));
        try
        {
            if (verticalFirst)
            {
                for (int y = firstRow; y < lastRow; y++)
                {
                    var bytes = source.Slice(y * sourceStride + firstColumn * 3, rowFloats);
                    var floats = rows.AsSpan((y - firstRow) * rowFloats, rowFloats);
                    for (int i = 0; i < bytes.Length; i++) floats[i] = bytes[i];
                }
                var shifted = horizontal with { Start = horizontal.Start.Select(s => s - firstColumn).ToArray() };
                var column = accumulator.AsSpan(0, rowFloats);
                Span<float> outputRow = stackalloc float[targetWidth * 3];
                for (int y = 0; y < targetHeight; y++)
                {
                    VerticalRow(rows, rowFloats, vertical, y, column, firstRow);
                    HorizontalRow(column, shifted, outputRow);
                    Store(outputRow, target.Slice(y * targetWidth * 3, targetWidth * 3));
                }
            }
            else
            {
                for (int y = firstRow; y < lastRow; y++)
                    HorizontalRow(source.Slice(y * sourceStride, sourceWidth * 3), horizontal, rows.AsSpan(y * rowFloats, rowFloats));
                var sums = accumulator.AsSpan(0, rowFloats);
                for (int y = 0; y < targetHeight; y++)
                {
                    VerticalRow(rows, rowFloats, vertical, y, sums, 0);
                    Store(sums, target.Slice(y * rowFloats, rowFloats));
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rows);
            System.Buffers.ArrayPool<float>.Shared.Return(accumulator);
        }
    }

    private static void Store(ReadOnlySpan<float> values, Span<byte> output)
    {
        for (int i = 0; i < values.Length; i++)
        {
            float value = values[i] + 0.5f;
            output[i] = value <= 0 ? (byte)0 : value >= 255 ? (byte)255 : (byte)value;
        }
    }

    /// <summary>One row of the horizontal pass, from 8-bit source pixels or from vertically filtered floats.</summary>
    private static void HorizontalRow<T>(ReadOnlySpan<T> row, Taps taps, Span<float> output) where T : INumberBase<T>
    {
        for (int x = 0; x < taps.Start.Length; x++)
        {
            int start = taps.Start[x] * 3, count = taps.Count[x];
            var weights = taps.Weights.AsSpan(x * taps.Width, count);
            float r = 0, g = 0, b = 0;
            for (int k = 0; k < count; k++)
            {
                float w = weights[k];
                int i = start + 3 * k;
                r += w * float.CreateTruncating(row[i]);
                g += w * float.CreateTruncating(row[i + 1]);
                b += w * float.CreateTruncating(row[i + 2]);
            }
            output[3 * x] = r;
            output[3 * x + 1] = g;
            output[3 * x + 2] = b;
        }
    }

    /// <param name="rowOffset">The source row that <paramref name="rows"/> starts with.</param>
    private static void VerticalRow(float[] rows, int rowFloats, Taps taps, int y, Span<float> accumulator, int rowOffset)
    {
        accumulator.Clear();
        var sums = MemoryMarshal.Cast<float, Vector<float>>(accumulator);
        int vectorised = sums.Length * Vector<float>.Count;
        int start = taps.Start[y] - rowOffset, count = taps.Count[y];
        for (int k = 0; k < count; k++)
        {
            float weight = taps.Weights[y * taps.Width + k];
            var source = rows.AsSpan((start + k) * rowFloats, rowFloats);
            var vectors = MemoryMarshal.Cast<float, Vector<float>>(source);
            var w = new Vector<float>(weight);
            for (int i = 0; i < sums.Length; i++) sums[i] += vectors[i] * w;
            for (int i = vectorised; i < rowFloats; i++) accumulator[i] += source[i] * weight;
        }
    }
}
