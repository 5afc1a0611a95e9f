using System.Text.Json.Serialization;

namespace MimFlow.Data.Augment;

/// <summary>A crop in display coordinates (after EXIF orientation) of the full-resolution image, in pixels.</summary>
public sealed record CropBox(double X, double Y, double Width, double Height);

public enum JitterOperation { Brightness, Contrast, Saturation }

/// <summary>ColorJitter's draw: one factor per operation and the (random) order they are applied in.</summary>
public sealed record ColorJitterParams(double Brightness, double Contrast, double Saturation, IReadOnlyList<JitterOperation> Order);

public enum ResampleKernel { Bicubic, Lanczos3, Bilinear, Nearest }

/// <summary>One output view cut from the crop: its square size and resampling kernel.</summary>
public sealed record ViewSpec(int Size, ResampleKernel Kernel);

/// <summary>
/// Every random decision of one augmented sample. Stored next to codes and features (pre-tokenization), it replays
/// on the original bytes to the identical pixels: <c>Augmenter.Render(bytes, params)</c>.
/// </summary>
/// <param name="Crop">The crop box in display coordinates of the original image.</param>
/// <param name="Flip">Horizontal flip of every view.</param>
/// <param name="Jitter">Colour jitter applied to the first view (null: none).</param>
/// <param name="Views">The views cut from the crop: BEiT: 224 bicubic, plus 112 lanczos for the dVAE.</param>
public sealed record AugmentParams(
    CropBox Crop,
    bool Flip,
    ColorJitterParams? Jitter,
    IReadOnlyList<ViewSpec> Views)
{
    [JsonIgnore]
    public int LargestView => Views.Max(v => v.Size);
}
