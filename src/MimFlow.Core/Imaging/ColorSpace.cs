namespace MimFlow.Core.Imaging;

public static class ColorSpace
{
    /// <summary>HSV to RGB, every channel in [0, 1] (hue wraps); the sector formula PIL's <c>hsv2rgb</c> also uses.</summary>
    public static (double R, double G, double B) HsvToRgb(double hue, double saturation, double value) =>
        HsvSixthsToRgb((hue % 1 + 1) % 1 * 6, saturation, value);

    /// <summary>The same with the hue already wrapped into [0, 1] and scaled to sixths ([0, 6]).</summary>
    public static (double R, double G, double B) HsvSixthsToRgb(double hue, double saturation, double value)
    {
        int sector = (int)Math.Floor(hue) % 6;
        double f = hue - Math.Floor(hue);
        double p = value * (1 - saturation), q = value * (1 - saturation * f), t = value * (1 - saturation * (1 - f));
        return sector switch
        {
            0 => (value, t, p),
            1 => (q, value, p),
            2 => (p, value, t),
            3 => (p, q, value),
            4 => (t, p, value),
            _ => (value, p, q),
        };
    }
}
