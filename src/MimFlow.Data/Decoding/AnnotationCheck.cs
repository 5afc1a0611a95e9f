using NetVips;

namespace MimFlow.Data.Decoding;

/// <summary>ADE20K label maps: one 8-bit band, the image's size, labels 0..150.</summary>
public static class AnnotationCheck
{
    /// <summary>Decodes and checks a label map; any problem is a <see cref="BadImageException"/> naming it.</summary>
    public static Augment.LabelMap Decode(byte[] encoded, ImageHeader imageHeader, int maxLabel = Sources.Layouts.Ade20kLayout.ClassCount)
    {
        try
        {
            using var labels = Image.NewFromBuffer(encoded, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
            if (labels.Bands != 1 || labels.Format != Enums.BandFormat.Uchar)
                throw new BadImageException($"annotation has {labels.Bands} band(s) of {labels.Format}; expected one 8-bit band");
            if (labels.Width != imageHeader.Width || labels.Height != imageHeader.Height)
                throw new BadImageException($"annotation is {labels.Width}×{labels.Height} but the image is {imageHeader.Width}×{imageHeader.Height}");
            byte[] values = labels.WriteToMemory<byte>();
            // Vectorised search for any label above the largest class; the maximum only for the message.
            if (maxLabel < byte.MaxValue && (maxLabel < 0 || values.AsSpan().IndexOfAnyInRange((byte)(maxLabel + 1), byte.MaxValue) >= 0))
                throw new BadImageException($"annotation holds label {(values.Length == 0 ? 0 : values.Max())} (largest class is {maxLabel})");
            return new Augment.LabelMap(values, labels.Width, labels.Height);
        }
        catch (VipsException e)
        {
            throw new BadImageException($"annotation does not decode: {ImageHeader.VipsReason(e)}", e);
        }
    }
}
