using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using NetVips;

namespace MimFlow.Tests.Data;

/// <summary>Small images of every kind the loader must handle, made with libvips.</summary>
internal static class TestImages
{
    /// <summary>An RGB image whose left half is red and right half blue, with a green top-left quadrant marker.</summary>
    public static Image Rgb(int width, int height)
    {
        byte[] pixels = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int i = 3 * (y * width + x);
                bool left = x < width / 2, top = y < height / 2;
                pixels[i] = (byte)(left && !top ? 220 : 20);
                pixels[i + 1] = (byte)(left && top ? 220 : 20);
                pixels[i + 2] = (byte)(!left ? 220 : 20);
            }
        return Image.NewFromMemory(pixels, width, height, 3, Enums.BandFormat.Uchar).Copy(interpretation: Enums.Interpretation.Srgb);
    }

    public static byte[] Jpeg(int width, int height) => Rgb(width, height).JpegsaveBuffer(q: 92, keep: Enums.ForeignKeep.None);

    public static byte[] GreyJpeg(int width, int height) => Rgb(width, height).Colourspace(Enums.Interpretation.Bw).JpegsaveBuffer(q: 92);

    public static byte[] CmykJpeg(int width, int height) => Rgb(width, height).Colourspace(Enums.Interpretation.Cmyk).JpegsaveBuffer(q: 92);

    public static byte[] Png16(int width, int height) =>
        (Rgb(width, height).Cast(Enums.BandFormat.Ushort) * 257).Cast(Enums.BandFormat.Ushort).Copy(interpretation: Enums.Interpretation.Rgb16).PngsaveBuffer();

    public static byte[] AlphaPng(int width, int height)
    {
        using var rgb = Rgb(width, height);
        using var alpha = Image.Black(width, height) + 128;
        return rgb.Bandjoin(alpha.Cast(Enums.BandFormat.Uchar)).PngsaveBuffer();
    }

    /// <summary>A JPEG stored as-is but tagged with EXIF orientation <paramref name="orientation"/>.</summary>
    public static byte[] OrientedJpeg(int width, int height, int orientation)
    {
        using var image = Rgb(width, height);
        using var tagged = image.Mutate(m => m.Set(GValue.GIntType, "orientation", orientation));
        return tagged.JpegsaveBuffer(q: 92);
    }

    public static void Write(string path, byte[] bytes)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>A generated ImageNet-layout training set (no validation split) in <paramref name="folder"/>, listed.</summary>
    public static async Task<SampleIndex> TrainingSet(string folder, int images, int classes, int minSide, int maxSide)
    {
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = folder, Images = images, Classes = classes, MinSide = minSide, MaxSide = maxSide, ValidationFraction = 0,
        });
        return DatasetSource.Open(folder, DatasetLayout.ImageNet);
    }

    /// <summary>The quarantine log in <paramref name="folder"/> as path → reason.</summary>
    public static Dictionary<string, string> QuarantineReasons(string folder) =>
        File.ReadAllLines(Path.Combine(folder, MimFlow.Data.Quarantine.QuarantineLog.FileName))
            .Select(l => System.Text.Json.JsonSerializer.Deserialize<System.Text.Json.JsonElement>(l))
            .ToDictionary(e => e.GetProperty("path").GetString()!, e => e.GetProperty("reason").GetString()!);
}
