namespace MimFlow.Datasets.Synthetic;

public enum TextureKind { Solid, Stripes, Checker, Dots, Waves, Radial }

public readonly record struct Rgb(double R, double G, double B)
{
    /// <summary>HSV (all in [0, 1]) to RGB in [0, 255].</summary>
    public static Rgb FromHsv(double hue, double saturation, double value)
    {
        var (r, g, b) = Core.Imaging.ColorSpace.HsvToRgb(hue, saturation, value);
        return new Rgb(r * 255, g * 255, b * 255);
    }

    public Rgb Scale(double factor) => new(R * factor, G * factor, B * factor);

    public static Rgb Mix(Rgb a, Rgb b, double t) => new(a.R + (b.R - a.R) * t, a.G + (b.G - a.G) * t, a.B + (b.B - a.B) * t);
}

/// <summary>How a region is coloured: two colours combined by a texture of a given period (pixels) and angle.</summary>
internal readonly struct Material(Rgb primary, Rgb secondary, TextureKind texture, double period, double angle)
{
    public const int TextureCount = 6;

    private readonly double cos = Math.Cos(angle), sin = Math.Sin(angle);

    public Rgb Primary { get; } = primary;
    public Rgb Secondary { get; } = secondary;
    public TextureKind Texture { get; } = texture;
    public double Period { get; } = period;

    /// <summary>The same pattern in other colours (per-image colour variation).</summary>
    public Material Recoloured(Rgb newPrimary, Rgb newSecondary) => new(newPrimary, newSecondary, Texture, Period, angle);

    public Rgb ColourAt(double x, double y, double originX, double originY)
    {
        double u = ((x - originX) * cos + (y - originY) * sin) / Period;
        double v = (-(x - originX) * sin + (y - originY) * cos) / Period;
        double t = Texture switch
        {
            TextureKind.Solid => 0,
            TextureKind.Stripes => Frac(u) < 0.5 ? 0 : 1,
            TextureKind.Checker => (Math.Floor(u) + Math.Floor(v)) % 2 == 0 ? 0 : 1,
            TextureKind.Dots => Square(Frac(u) - 0.5) + Square(Frac(v) - 0.5) < 0.09 ? 1 : 0,
            TextureKind.Waves => 0.5 + 0.5 * Math.Sin(2 * Math.PI * (u + 0.3 * Math.Sin(2 * Math.PI * v * 0.5))),
            TextureKind.Radial => 0.5 + 0.5 * Math.Cos(2 * Math.PI * Math.Sqrt(u * u + v * v)),
            _ => 0,
        };
        return Rgb.Mix(Primary, Secondary, t);
    }

    private static double Frac(double value) => value - Math.Floor(value);

    private static double Square(double value) => value * value;
}
