using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Precompute.Tokenize;

/// <summary>The source as shards keep it: display size, and optionally the image re-encoded and its label map.</summary>
public sealed record StoredSource(int Width, int Height, byte[]? Image, byte[]? LabelMap);

/// <summary>
/// Re-encodes a source for the <c>image</c> column: EXIF orientation applied, sRGB, no alpha, shrunk (never
/// enlarged) so the longer side is at most <c>maxSide</c>, baseline JPEG at <c>quality</c>, metadata stripped; an
/// ADE20K annotation is resized to the same pixels with nearest neighbour and stored as 8-bit PNG.
/// </summary>
public static class SourceStore
{
    public static StoredSource Store(byte[] encoded, byte[]? annotation, int? maxSide, int quality, DecodeLimits limits)
    {
        var header = ImageHeader.Read(encoded, limits);
        if (maxSide is not int side) return new StoredSource(header.Width, header.Height, null, null);
        using var thumbnail = Image.ThumbnailBuffer(encoded, side, height: side, size: Enums.Size.Down);
        using var rgb = ToSrgb(thumbnail);
        byte[] jpeg = rgb.JpegsaveBuffer(q: quality, keep: Enums.ForeignKeep.None);
        byte[]? labels = null;
        if (annotation is not null)
        {
            using var map = Image.NewFromBuffer(annotation, access: Enums.Access.Sequential);
            using var single = map.Bands > 1 ? map.ExtractBand(0) : map.Copy();
            using var resized = single.Width == rgb.Width && single.Height == rgb.Height
                ? single.Copy()
                : single.Resize((double)rgb.Width / single.Width, kernel: Enums.Kernel.Nearest, vscale: (double)rgb.Height / single.Height);
            using var exact = resized.Width == rgb.Width && resized.Height == rgb.Height ? resized.Copy() : resized.Gravity(Enums.CompassDirection.NorthWest, rgb.Width, rgb.Height);
            using var bytes = exact.Cast(Enums.BandFormat.Uchar);
            labels = bytes.PngsaveBuffer(compression: 9, keep: Enums.ForeignKeep.None);
        }
        return new StoredSource(header.Width, header.Height, jpeg, labels);
    }

    private static Image ToSrgb(Image image)
    {
        var current = image.HasAlpha() ? image.Flatten(background: [255]) : image.Copy();
        if (current.Interpretation is not (Enums.Interpretation.Srgb or Enums.Interpretation.Rgb) || current.Bands != 3)
        {
            var converted = current.Colourspace(Enums.Interpretation.Srgb);
            current.Dispose();
            current = converted;
        }
        if (current.Format != Enums.BandFormat.Uchar)
        {
            var cast = current.Cast(Enums.BandFormat.Uchar);
            current.Dispose();
            current = cast;
        }
        return current;
    }
}
