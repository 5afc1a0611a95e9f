using System.Buffers;
using MimFlow.Core.Randomness;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Data.Augment;

/// <summary>
/// Renders an <see cref="AugmentParams"/> on encoded bytes: decode once the region that covers every view's crop
/// (the managed <see cref="JpegRegionDecoder"/> for common JPEGs at full scale, else libvips with JPEG shrink-on-load
/// at the largest factor all views allow), then per view resample the crop plane by plane (PIL's antialiased
/// method, <see cref="PlanarResampler"/>) straight into the caller's planar (C, H, W) buffer, mirror it if flipped,
/// apply its pixel operations on the planes, and pad where the view is smaller than the recipe's shape. Nothing is
/// allocated per image but pooled buffers. The same bytes and params always give the same output.
/// </summary>
public static class Augmenter
{
    /// <param name="destinations">One buffer per view of <see cref="ViewShape.Bytes"/> bytes, planar RGB.</param>
    public static void Render(byte[] encoded, ImageHeader header, AugmentParams parameters, IReadOnlyList<ViewShape> shapes, IReadOnlyList<Memory<byte>> destinations)
    {
        if (destinations.Count != parameters.Views.Count || shapes.Count != parameters.Views.Count)
            throw new ArgumentException($"{parameters.Views.Count} views need as many shapes and destinations (got {shapes.Count} and {destinations.Count}).");
        var views = parameters.Views;
        var union = new CropBox(views.Min(v => v.Crop.X), views.Min(v => v.Crop.Y), 0, 0);
        union = union with { Width = views.Max(v => v.Crop.Right) - union.X, Height = views.Max(v => v.Crop.Bottom) - union.Y };
        int shrink = views.Min(v => RegionDecoder.ShrinkFactor(header, v.Crop, v.Width, v.Height));

        // The region that covers every view, as planes R, G, B: the managed decoder for the common JPEG (bit for bit
        // libjpeg-turbo's pixels, only the blocks the region touches), libvips for everything else.
        bool wantMean = views.Any(v => v.Ops.Any(op => op is Contrast { WholeImage: true }));
        var (region, width, height, placement, imageMean) = DecodeRegion(encoded, header, union, shrink, wantMean);
        try
        {
            int plane = width * height;
            for (int v = 0; v < views.Count; v++)
            {
                var view = views[v];
                var shape = shapes[v];
                if (view.Width > shape.Width || view.Height > shape.Height || destinations[v].Length != shape.Bytes)
                    throw new ArgumentException($"view {v} ({view.Width}×{view.Height}) does not fit its {shape.Width}×{shape.Height} buffer of {destinations[v].Length} bytes.");
                bool exact = view.Width == shape.Width && view.Height == shape.Height;
                byte[]? scratch = exact ? null : ArrayPool<byte>.Shared.Rent(3 * view.Width * view.Height);
                try
                {
                    var image = new PlanarImage(exact ? destinations[v] : scratch.AsMemory(0, 3 * view.Width * view.Height), view.Width, view.Height);
                    var plan = PlanarResampler.Plan.For(width, height, placement.Map(view.Crop), view.Width, view.Height, view.Kernel);
                    for (int c = 0; c < 3; c++)
                    {
                        var target = image.Plane(c);
                        PlanarResampler.Resize(plan, region.AsSpan(c * plane, plane), target, view.Width);
                        if (view.Flip)
                            for (int y = 0; y < view.Height; y++) target.Slice(y * view.Width, view.Width).Reverse();
                    }
                    ApplyOps(view.Ops, image, imageMean);
                    if (!exact) Pad(image, shape, view.PadValue, destinations[v].Span);
                }
                finally
                {
                    if (scratch is not null) ArrayPool<byte>.Shared.Return(scratch);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(region);
        }
    }

    /// <summary>
    /// The view's operations in order. A whole-image contrast blends with the source image's mean grey as the
    /// operations before it would have left it: brightness factors scale it (per-channel clipping ignored),
    /// saturation and grey conversion keep it (they blend towards each pixel's own grey).
    /// </summary>
    private static void ApplyOps(IReadOnlyList<PixelOp> ops, PlanarImage image, double imageMean)
    {
        double scale = 1;
        foreach (var op in ops)
        {
            switch (op)
            {
                case Contrast { WholeImage: true } contrast:
                    contrast.Apply(image, Math.Min(255, imageMean * scale));
                    break;
                case Brightness brightness:
                    scale *= brightness.Factor;
                    op.Apply(image);
                    break;
                default:
                    op.Apply(image);
                    break;
            }
        }
    }

    /// <summary>
    /// The mean grey of the whole image, for contrast that acts before the crop: from the luma DC coefficients when the
    /// managed decoder can read the JPEG (<see cref="JpegRegionDecoder.TryLumaMean"/>), else PIL's L averaged over a
    /// libvips decode (JPEGs shrunk 8× on load).
    /// </summary>
    public static double WholeImageMean(byte[] encoded, ImageHeader header)
    {
        if (header.IsJpeg && JpegRegionDecoder.ForThread.TryLumaMean(encoded, out double mean)) return mean;
        using var image = RegionDecoder.LoadRegion(encoded, header, new CropBox(0, 0, header.Width, header.Height), header.IsJpeg ? 8 : 1, out _);
        byte[] rgb = image.WriteToMemory<byte>();
        long sum = 0;
        for (int i = 0; i + 2 < rgb.Length; i += 3) sum += PixelOp.Luma(rgb[i], rgb[i + 1], rgb[i + 2]);
        return (double)sum / Math.Max(1, rgb.Length / 3);
    }

    /// <summary>
    /// The region <paramref name="union"/> of the image as planar RGB in a pooled buffer, with where it sits. JPEGs
    /// the managed decoder handles (baseline, YCbCr, common samplings, no rotation, full scale) decode with it, the
    /// same pixels libvips gives (tested); the rest, and shrink-on-load, go through libvips.
    /// </summary>
    private static unsafe (byte[] Region, int Width, int Height, RegionPlacement Placement, double Mean) DecodeRegion(byte[] encoded, ImageHeader header, CropBox union, int shrink, bool wantMean)
    {
        string? managedRefusal = null;
        if (header.IsJpeg && shrink == 1 && header.Orientation == 1)
        {
            // The box RegionDecoder.LoadRegion cuts at scale 1.
            int left = Math.Clamp((int)Math.Round(union.X), 0, header.Width - 1);
            int top = Math.Clamp((int)Math.Round(union.Y), 0, header.Height - 1);
            int right = Math.Clamp((int)Math.Round(union.X + union.Width), left + 1, header.Width);
            int bottom = Math.Clamp((int)Math.Round(union.Y + union.Height), top + 1, header.Height);
            int w = right - left, h = bottom - top;
            byte[] planar = ArrayPool<byte>.Shared.Rent(3 * w * h);
            // The whole image's mean comes from the same entropy pass, continued to the last MCU row.
            if (JpegRegionDecoder.ForThread.TryDecode(encoded, left, top, w, h, planar, wantMean, out double lumaMean))
                return (planar, w, h, new RegionPlacement(left, top, 1, 1), lumaMean);
            managedRefusal = JpegRegionDecoder.ForThread.LastRefusal;
            ArrayPool<byte>.Shared.Return(planar);
        }
        IntPtr pixels = IntPtr.Zero;
        try
        {
            int width, height;
            RegionPlacement placement;
            using (var region = RegionDecoder.LoadRegion(encoded, header, union, shrink, out placement))
            {
                width = region.Width;
                height = region.Height;
                pixels = region.WriteToMemory(out ulong length);
                if ((long)length != 3L * width * height) throw new BadImageException($"decoder returned {length} bytes for {width}×{height} RGB");
            }
            byte[] planar = ArrayPool<byte>.Shared.Rent(3 * width * height);
            new PlanarImage(planar, width, height).FromInterleaved(new ReadOnlySpan<byte>((void*)pixels, 3 * width * height));
            return (planar, width, height, placement, wantMean ? WholeImageMean(encoded, header) : 0);
        }
        catch (VipsException e)
        {
            throw new BadImageException($"decode failed: {ImageHeader.VipsReason(e)}{ImageHeader.Also(managedRefusal)}", e);
        }
        finally
        {
            if (pixels != IntPtr.Zero) NetVips.NetVips.Free(pixels);
        }
    }

    /// <summary>A view smaller than its shape goes top-left on a canvas of <paramref name="pad"/>.</summary>
    private static void Pad(PlanarImage image, ViewShape shape, byte pad, Span<byte> planar)
    {
        planar.Fill(pad);
        int plane = shape.Width * shape.Height;
        for (int c = 0; c < 3; c++)
        {
            var source = image.Plane(c);
            for (int y = 0; y < image.Height; y++)
                source.Slice(y * image.Width, image.Width).CopyTo(planar.Slice(c * plane + y * shape.Width, image.Width));
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
}
