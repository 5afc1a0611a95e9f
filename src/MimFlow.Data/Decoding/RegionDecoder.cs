using MimFlow.Data.Augment;
using NetVips;

namespace MimFlow.Data.Decoding;

/// <summary>
/// Decodes only what a crop needs: JPEGs load with libjpeg's shrink-on-load at the largest factor (8, 4, 2) that
/// keeps the crop at least as large as the largest output view, then the crop is cut (in the shrunk image's
/// coordinates), and the result is 8-bit sRGB with three bands (CMYK and grey converted, alpha dropped as PIL's
/// <c>convert("RGB")</c> does, 16-bit reduced, EXIF orientation applied).
/// </summary>
public static class RegionDecoder
{
    /// <summary>The largest JPEG shrink factor that keeps the crop at or above <paramref name="width"/> × <paramref name="height"/>.</summary>
    public static int ShrinkFactor(ImageHeader header, CropBox crop, int width, int height)
    {
        if (!header.IsJpeg) return 1;
        foreach (int factor in (int[])[8, 4, 2])
            if (crop.Width / factor >= width && crop.Height / factor >= height) return factor;
        return 1;
    }

    /// <summary>
    /// The region <paramref name="crop"/> as an sRGB 8-bit 3-band image (not yet resized), decoded at
    /// <paramref name="shrink"/>; <paramref name="placement"/> maps display coordinates of the original into it:
    /// x' = x·ScaleX − Left. The caller disposes the image.
    /// </summary>
    public static Image LoadRegion(byte[] encoded, ImageHeader header, CropBox crop, int shrink, out RegionPlacement placement)
    {
        // Rotated images need random access for autorot; the common case streams.
        var access = header.Orientation == 1 ? Enums.Access.Sequential : Enums.Access.Random;
        var disposables = new List<Image>();
        try
        {
            Image image = header.IsJpeg
                ? Image.JpegloadBuffer(encoded, shrink: shrink, autorotate: false, access: access, failOn: Enums.FailOn.Error)
                : Image.NewFromBuffer(encoded, access: access, failOn: Enums.FailOn.Error);
            disposables.Add(image);
            if (header.Orientation != 1) disposables.Add(image = image.Autorot());

            double sx = (double)image.Width / header.Width, sy = (double)image.Height / header.Height;
            int left = Math.Clamp((int)Math.Round(crop.X * sx), 0, image.Width - 1);
            int top = Math.Clamp((int)Math.Round(crop.Y * sy), 0, image.Height - 1);
            int right = Math.Clamp((int)Math.Round((crop.X + crop.Width) * sx), left + 1, image.Width);
            int bottom = Math.Clamp((int)Math.Round((crop.Y + crop.Height) * sy), top + 1, image.Height);
            disposables.Add(image = image.Crop(left, top, right - left, bottom - top));
            placement = new RegionPlacement(left, top, sx, sy);
            var srgb = ToSrgb8(image, disposables);
            // NetVips may hand back the same object for a no-op (a crop of the whole image): keep it alive once.
            disposables.RemoveAll(d => ReferenceEquals(d, srgb));
            return srgb;
        }
        catch (VipsException e)
        {
            throw new BadImageException($"decode failed: {ImageHeader.VipsReason(e)}", e);
        }
        finally
        {
            foreach (var image in disposables.Distinct(ReferenceEqualityComparer.Instance).Cast<Image>()) image.Dispose();
        }
    }

    private static Image ToSrgb8(Image image, List<Image> disposables)
    {
        if (image.HasAlpha()) disposables.Add(image = image.ExtractBand(0, n: image.Bands - 1));
        if (image.Interpretation != Enums.Interpretation.Srgb || image.Bands != 3)
            disposables.Add(image = image.Colourspace(Enums.Interpretation.Srgb));
        if (image.Format != Enums.BandFormat.Uchar)
            disposables.Add(image = image.Cast(Enums.BandFormat.Uchar));
        if (image.Bands != 3)
            throw new BadImageException($"cannot convert to RGB: {image.Bands} bands of {image.Interpretation}");
        return image;
    }

}

/// <summary>Where a decoded region sits: display coordinates x of the original map to x·ScaleX − Left in it.</summary>
public sealed record RegionPlacement(int Left, int Top, double ScaleX, double ScaleY)
{
    public CropBox Map(CropBox box) => new(box.X * ScaleX - Left, box.Y * ScaleY - Top, box.Width * ScaleX, box.Height * ScaleY);
}
