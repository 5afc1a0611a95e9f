using NetVips;

namespace MimFlow.Data.Decoding;

/// <summary>ADE20K label maps: one 8-bit band, the image's size, labels 0..150.</summary>
public static class AnnotationCheck
{
    /// <summary>
    /// Decodes and checks a label map; any problem is a <see cref="BadImageException"/> naming it. 8-bit greyscale PNGs
    /// (ADE20K's own) are decoded by <see cref="PngLabelDecoder"/>, everything else by libvips.
    /// </summary>
    public static Augment.LabelMap Decode(byte[] encoded, ImageHeader imageHeader, int maxLabel = Sources.Layouts.Ade20kLayout.ClassCount)
    {
        byte[]? values = null;
        if (PngLabelDecoder.IsGreyscale8(encoded, out int width, out int height))
        {
            CheckSize(width, height, imageHeader);
            try
            {
                values = PngLabelDecoder.Decode(encoded, width, height);
            }
            catch (BadImageException e)
            {
                // The reason goes into the sample's quarantine line: it must say the label map is what is broken.
                throw new BadImageException($"annotation does not decode: {e.Reason}", e);
            }
        }
        values ??= DecodeWithLibvips(encoded, imageHeader);
        // Vectorised search for any label above the largest class; the maximum only for the message.
        if (maxLabel < byte.MaxValue && (maxLabel < 0 || values.AsSpan().IndexOfAnyInRange((byte)(maxLabel + 1), byte.MaxValue) >= 0))
            throw new BadImageException($"annotation holds label {(values.Length == 0 ? 0 : values.Max())} (largest class is {maxLabel})");
        return new Augment.LabelMap(values, imageHeader.Width, imageHeader.Height);
    }

    private static byte[] DecodeWithLibvips(byte[] encoded, ImageHeader imageHeader)
    {
        try
        {
            using var labels = Image.NewFromBuffer(encoded, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
            if (labels.Bands != 1 || labels.Format != Enums.BandFormat.Uchar)
                throw new BadImageException($"annotation has {labels.Bands} band(s) of {labels.Format}; expected one 8-bit band");
            CheckSize(labels.Width, labels.Height, imageHeader);
            return labels.WriteToMemory<byte>();
        }
        catch (VipsException e)
        {
            throw new BadImageException($"annotation does not decode: {ImageHeader.VipsReason(e)}", e);
        }
    }

    private static void CheckSize(int width, int height, ImageHeader imageHeader)
    {
        if (width != imageHeader.Width || height != imageHeader.Height)
            throw new BadImageException($"annotation is {width}×{height} but the image is {imageHeader.Width}×{imageHeader.Height}");
    }
}
