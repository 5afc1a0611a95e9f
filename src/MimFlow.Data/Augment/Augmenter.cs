using System.Buffers;
using MimFlow.Core.Randomness;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Data.Augment;

/// <summary>
/// Renders an <see cref="AugmentParams"/> on encoded bytes: decode once the region that covers every view's crop
/// (with JPEG shrink-on-load at the largest factor all views allow), then per view resample the crop (PIL's
/// antialiased method), mirror it if flipped, apply its pixel operations, and write it planar (C, H, W) into the
/// caller's buffer at the recipe's view shape (padding where the view is smaller). The same bytes and params
/// always give the same output.
/// </summary>
public static class Augmenter
{
    /// <param name="destinations">One buffer per view of <see cref="ViewShape.Bytes"/> bytes, planar RGB.</param>
    public static unsafe void Render(byte[] encoded, ImageHeader header, AugmentParams parameters, IReadOnlyList<ViewShape> shapes, IReadOnlyList<Memory<byte>> destinations)
    {
        if (destinations.Count != parameters.Views.Count || shapes.Count != parameters.Views.Count)
            throw new ArgumentException($"{parameters.Views.Count} views need as many shapes and destinations (got {shapes.Count} and {destinations.Count}).");
        var views = parameters.Views;
        var union = new CropBox(views.Min(v => v.Crop.X), views.Min(v => v.Crop.Y), 0, 0);
        union = union with { Width = views.Max(v => v.Crop.Right) - union.X, Height = views.Max(v => v.Crop.Bottom) - union.Y };
        int shrink = views.Min(v => RegionDecoder.ShrinkFactor(header, v.Crop, v.Width, v.Height));

        IntPtr pixels = IntPtr.Zero;
        int width, height;
        RegionPlacement placement;
        try
        {
            // One libvips pipeline per sample: decode the region into memory; the rest runs in managed code.
            using var region = RegionDecoder.LoadRegion(encoded, header, union, shrink, out placement);
            width = region.Width;
            height = region.Height;
            pixels = region.WriteToMemory(out ulong length);
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
            for (int v = 0; v < views.Count; v++)
            {
                var view = views[v];
                var shape = shapes[v];
                if (view.Width > shape.Width || view.Height > shape.Height || destinations[v].Length != shape.Bytes)
                    throw new ArgumentException($"view {v} ({view.Width}×{view.Height}) does not fit its {shape.Width}×{shape.Height} buffer of {destinations[v].Length} bytes.");
                byte[] buffer = ArrayPool<byte>.Shared.Rent(3 * view.Width * view.Height);
                try
                {
                    var image = new RgbImage(buffer, view.Width, view.Height);
                    Resampler.ResizeRgb(source, width, height, 3 * width, placement.Map(view.Crop), image.Pixels, view.Width, view.Height, view.Kernel);
                    if (view.Flip) MirrorRows(image);
                    foreach (var op in view.Ops) op.Apply(image);
                    WritePlanar(image, shape, view.PadValue, destinations[v].Span);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
        }
        finally
        {
            NetVips.NetVips.Free(pixels);
        }
    }

    /// <summary>timm's "pixel" erasing in normalised space: each value of the box becomes N(0, 1) noise.</summary>
    public static void Erase(Span<float> planar, ViewShape shape, EraseBox box)
    {
        var random = new StableRandom(box.NoiseSeed);
        int plane = shape.Width * shape.Height;
        for (int c = 0; c < 3; c++)
            for (int y = box.Y; y < box.Y + box.Height; y++)
                for (int x = box.X; x < box.X + box.Width; x++)
                    planar[c * plane + y * shape.Width + x] = (float)random.NextGaussian();
    }

    private static void MirrorRows(RgbImage image)
    {
        var pixels = image.Pixels;
        for (int y = 0; y < image.Height; y++)
        {
            var row = pixels.Slice(3 * y * image.Width, 3 * image.Width);
            for (int left = 0, right = image.Width - 1; left < right; left++, right--)
                for (int c = 0; c < 3; c++) (row[3 * left + c], row[3 * right + c]) = (row[3 * right + c], row[3 * left + c]);
        }
    }

    private static void WritePlanar(RgbImage image, ViewShape shape, byte pad, Span<byte> planar)
    {
        int plane = shape.Width * shape.Height;
        if (image.Width != shape.Width || image.Height != shape.Height) planar.Fill(pad);
        ReadOnlySpan<byte> pixels = image.Pixels;
        for (int y = 0; y < image.Height; y++)
        {
            var row = pixels.Slice(3 * y * image.Width, 3 * image.Width);
            int rowStart = y * shape.Width;
            for (int x = 0; x < image.Width; x++)
            {
                planar[rowStart + x] = row[3 * x];
                planar[plane + rowStart + x] = row[3 * x + 1];
                planar[2 * plane + rowStart + x] = row[3 * x + 2];
            }
        }
    }
}
