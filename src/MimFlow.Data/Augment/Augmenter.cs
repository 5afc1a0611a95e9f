using MimFlow.Data.Decoding;
using System.Buffers;
using NetVips;

namespace MimFlow.Data.Augment;

/// <summary>
/// Renders an <see cref="AugmentParams"/> on encoded bytes: decode the crop once into memory (shrink-on-load),
/// resample it to each view (antialiased, PIL's method), jitter the 8-bit pixels, and write them flipped-or-not
/// as planar (C, H, W) bytes into the caller's buffers. The same bytes and params always give the same output.
/// </summary>
public static class Augmenter
{
    /// <summary>Bytes one view of <paramref name="size"/> takes in planar RGB.</summary>
    public static int ViewBytes(int size) => 3 * size * size;

    /// <param name="destinations">One span per view of <see cref="ViewBytes"/> bytes, planar RGB.</param>
    public static unsafe void Render(byte[] encoded, ImageHeader header, AugmentParams parameters, IReadOnlyList<Memory<byte>> destinations)
    {
        if (destinations.Count != parameters.Views.Count)
            throw new ArgumentException($"{parameters.Views.Count} views need as many destinations (got {destinations.Count}).");
        IntPtr pixels = IntPtr.Zero;
        int width, height;
        try
        {
            // One libvips pipeline per sample: decode the crop (shrunk on load where possible) into memory.
            using var crop = RegionDecoder.LoadCrop(encoded, header, parameters.Crop, parameters.LargestView);
            width = crop.Width;
            height = crop.Height;
            pixels = crop.WriteToMemory(out ulong length);
            if ((long)length != 3L * width * height) throw new BadImageException($"decoder returned {length} bytes for {width}×{height} RGB");
        }
        catch (VipsException e)
        {
            if (pixels != IntPtr.Zero) NetVips.NetVips.Free(pixels);
            throw new BadImageException($"decode failed: {ImageHeader.VipsReason(e)}", e);
        }
        try
        {
            var source = new ReadOnlySpan<byte>((void*)pixels, 3 * width * height);
            for (int v = 0; v < parameters.Views.Count; v++)
            {
                var view = parameters.Views[v];
                if (destinations[v].Length != ViewBytes(view.Size))
                    throw new ArgumentException($"view {v} needs {ViewBytes(view.Size)} bytes (got {destinations[v].Length}).");
                byte[] interleaved = ArrayPool<byte>.Shared.Rent(ViewBytes(view.Size));
                try
                {
                    var rgb = interleaved.AsSpan(0, ViewBytes(view.Size));
                    Resampler.ResizeRgb(source, width, height, 3 * width, rgb, view.Size, view.Size, view.Kernel);
                    if (parameters.Jitter is { } jitter) ColorJitter.Apply(rgb, jitter);
                    ToPlanar(rgb, view.Size, parameters.Flip, destinations[v].Span);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(interleaved);
                }
            }
        }
        finally
        {
            NetVips.NetVips.Free(pixels);
        }
    }

    private static void ToPlanar(ReadOnlySpan<byte> interleaved, int size, bool flip, Span<byte> planar)
    {
        int plane = size * size;
        for (int y = 0; y < size; y++)
        {
            var row = interleaved.Slice(y * size * 3, size * 3);
            int rowStart = y * size;
            for (int x = 0; x < size; x++)
            {
                int source = (flip ? size - 1 - x : x) * 3;
                int target = rowStart + x;
                planar[target] = row[source];
                planar[plane + target] = row[source + 1];
                planar[2 * plane + target] = row[source + 2];
            }
        }
    }
}
