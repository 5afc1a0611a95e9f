using System.Text.Json.Serialization;

namespace MimFlow.Data.Augment;

/// <summary>A crop in display coordinates (after EXIF orientation) of the full-resolution image, in pixels.</summary>
public sealed record CropBox(double X, double Y, double Width, double Height)
{
    public double Right => X + Width;
    public double Bottom => Y + Height;
}

public enum ResampleKernel { Bicubic, Lanczos3, Bilinear, Nearest }

/// <summary>The size of one output view of a recipe (every sample of the recipe has the same views).</summary>
public sealed record ViewShape(int Width, int Height)
{
    public int Bytes => 3 * Width * Height;
}

/// <summary>
/// One output view: the crop of the original, resampled to <see cref="Width"/> × <see cref="Height"/> with
/// <see cref="Kernel"/>, mirrored if <see cref="Flip"/>, then the pixel operations in order, then placed at the
/// top-left of a canvas of the recipe's view shape (padding with <see cref="PadValue"/> where it is larger, as
/// segmentation pads crops of small images).
/// </summary>
public sealed record ViewParams(CropBox Crop, int Width, int Height, ResampleKernel Kernel, bool Flip, IReadOnlyList<PixelOp> Ops, byte PadValue = 0);

/// <summary>timm's random erasing of one view: a box filled with per-pixel N(0, 1) noise in normalised space.</summary>
/// <param name="NoiseSeed">Seeds the noise, so the erased values replay too.</param>
public sealed record EraseBox(int View, int X, int Y, int Width, int Height, ulong NoiseSeed);

/// <summary>
/// Every random decision of one augmented sample. Stored next to codes and features (pre-tokenization), it replays
/// on the original bytes to the identical pixels: <c>Augmenter.Render(bytes, header, params, …)</c>.
/// </summary>
public sealed record AugmentParams(IReadOnlyList<ViewParams> Views, IReadOnlyList<EraseBox> Erase)
{
    /// <summary>Views without erasing.</summary>
    public static AugmentParams Of(params ViewParams[] views) => new(views, []);

    private static readonly System.Text.Json.JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>The stored form (shards' <c>augment</c> column): compact JSON, doubles round-trip exactly.</summary>
    public string ToJson() => System.Text.Json.JsonSerializer.Serialize(this, Json);

    public static AugmentParams FromJson(string json) =>
        System.Text.Json.JsonSerializer.Deserialize<AugmentParams>(json, Json) ?? throw new InvalidDataException("empty augmentation parameters");
}

/// <summary>The colour-jitter operations, for <see cref="ColorJitter"/>'s random order.</summary>
public enum JitterOperation { Brightness, Contrast, Saturation, Hue }
