using MimFlow.Core.Randomness;
using NetVips;

namespace MimFlow.Datasets.Synthetic;

/// <summary>An RGB image being painted, with an optional label map painted in step (same shapes, same pixels).</summary>
internal sealed class Canvas
{
    private readonly double[] red, green, blue;

    public Canvas(int width, int height, bool withLabels)
    {
        Width = width;
        Height = height;
        red = new double[width * height];
        green = new double[width * height];
        blue = new double[width * height];
        Labels = withLabels ? new byte[width * height] : null;
    }

    /// <summary>A blank canvas with sides drawn uniformly in the options' range (the first draws of an image's stream).</summary>
    public static Canvas WithRandomSize(SynthesisOptions options, ref StableRandom random, bool withLabels)
    {
        int width = random.NextInt(options.MinSide, options.MaxSide);
        int height = random.NextInt(options.MinSide, options.MaxSide);
        return new Canvas(width, height, withLabels);
    }

    public int Width { get; }
    public int Height { get; }
    public byte[]? Labels { get; }

    /// <summary>Fills the pixels for which <paramref name="inside"/> holds (within the given bounds).</summary>
    public void Fill(Func<double, double, bool> inside, Material material, double originX, double originY, byte label,
        (int X0, int Y0, int X1, int Y1)? bounds = null, double shading = 0)
    {
        var (x0, y0, x1, y1) = bounds ?? (0, 0, Width, Height);
        for (int y = y0; y < y1; y++)
        {
            // Light falls from above: a vertical brightness ramp makes regions look less flat.
            double light = 1 + shading * ((double)y / Height - 0.5);
            for (int x = x0; x < x1; x++)
            {
                if (!inside(x + 0.5, y + 0.5)) continue;
                var colour = material.ColourAt(x, y, originX, originY).Scale(light);
                int i = y * Width + x;
                red[i] = colour.R;
                green[i] = colour.G;
                blue[i] = colour.B;
                if (Labels is not null) Labels[i] = label;
            }
        }
    }

    public void Fill(Shape shape, Material material, byte label) =>
        Fill(shape.Contains, material, shape.CenterX, shape.CenterY, label, shape.Bounds(Width, Height));

    /// <summary>Adds per-pixel Gaussian noise (sensor-like) from <paramref name="random"/>, row by row.</summary>
    public void AddNoise(ref StableRandom random, double sigma)
    {
        for (int i = 0; i < red.Length; i++)
        {
            red[i] += sigma * random.NextGaussian();
            green[i] += sigma * random.NextGaussian();
            blue[i] += sigma * random.NextGaussian();
        }
    }

    public byte[] EncodeJpeg(int quality)
    {
        byte[] interleaved = new byte[red.Length * 3];
        for (int i = 0; i < red.Length; i++)
        {
            interleaved[3 * i] = ToByte(red[i]);
            interleaved[3 * i + 1] = ToByte(green[i]);
            interleaved[3 * i + 2] = ToByte(blue[i]);
        }
        using var image = Image.NewFromMemory(interleaved, Width, Height, 3, Enums.BandFormat.Uchar);
        using var srgb = image.Copy(interpretation: Enums.Interpretation.Srgb);
        return srgb.JpegsaveBuffer(q: quality, keep: Enums.ForeignKeep.None);
    }

    public byte[] EncodeLabelsPng()
    {
        if (Labels is null) throw new InvalidOperationException("This canvas paints no labels.");
        using var image = Image.NewFromMemory(Labels, Width, Height, 1, Enums.BandFormat.Uchar);
        using var grey = image.Copy(interpretation: Enums.Interpretation.Bw);
        return grey.PngsaveBuffer(compression: 6, keep: Enums.ForeignKeep.None);
    }

    private static byte ToByte(double value) => (byte)Math.Clamp((int)Math.Round(value), 0, 255);
}
