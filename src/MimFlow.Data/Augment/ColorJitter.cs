using MimFlow.Core.Randomness;

namespace MimFlow.Data.Augment;

/// <summary>
/// torchvision's ColorJitter(brightness, contrast, saturation) with hue 0: factors uniform in [1 − s, 1 + s], the
/// three operations in a random order, each applied as PIL's ImageEnhance does on 8-bit RGB (blend with a
/// degenerate image — black, the mean grey, the per-pixel grey — then round and clip to 0..255).
/// </summary>
public sealed record ColorJitter(double Brightness = 0.4, double Contrast = 0.4, double Saturation = 0.4)
{
    public ColorJitterParams Draw(ref StableRandom random)
    {
        JitterOperation[] order = [JitterOperation.Brightness, JitterOperation.Contrast, JitterOperation.Saturation];
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = random.NextInt(0, i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        double b = random.Uniform(1 - Brightness, 1 + Brightness);
        double c = random.Uniform(1 - Contrast, 1 + Contrast);
        double s = random.Uniform(1 - Saturation, 1 + Saturation);
        return new ColorJitterParams(b, c, s, order);
    }

    /// <summary>Applies <paramref name="jitter"/> in place to interleaved 8-bit RGB pixels.</summary>
    public static void Apply(Span<byte> rgb, ColorJitterParams jitter)
    {
        Span<byte> table = stackalloc byte[256];
        foreach (var operation in jitter.Order)
        {
            switch (operation)
            {
                case JitterOperation.Brightness:
                    // Blend with black: v·b. A per-value table makes it one lookup a byte.
                    for (int v = 0; v < 256; v++) table[v] = Clip(v * jitter.Brightness);
                    Lookup(rgb, table);
                    break;
                case JitterOperation.Contrast:
                    long sum = 0;
                    for (int i = 0; i + 2 < rgb.Length; i += 3) sum += Luma(rgb[i], rgb[i + 1], rgb[i + 2]);
                    double mean = Math.Floor((double)sum / (rgb.Length / 3) + 0.5);
                    for (int v = 0; v < 256; v++) table[v] = Clip(mean + jitter.Contrast * (v - mean));
                    Lookup(rgb, table);
                    break;
                case JitterOperation.Saturation:
                    // Blend with the pixel's own grey: grey + s·(v − grey), in 16.16 fixed point.
                    int factor = (int)Math.Round(jitter.Saturation * 65536);
                    for (int i = 0; i + 2 < rgb.Length; i += 3)
                    {
                        int grey = Luma(rgb[i], rgb[i + 1], rgb[i + 2]);
                        int greyFixed = (grey << 16) + 0x8000;
                        rgb[i] = ClipFixed(greyFixed + factor * (rgb[i] - grey));
                        rgb[i + 1] = ClipFixed(greyFixed + factor * (rgb[i + 1] - grey));
                        rgb[i + 2] = ClipFixed(greyFixed + factor * (rgb[i + 2] - grey));
                    }
                    break;
            }
        }
    }

    private static void Lookup(Span<byte> values, ReadOnlySpan<byte> table)
    {
        for (int i = 0; i < values.Length; i++) values[i] = table[values[i]];
    }

    private static byte ClipFixed(int value) => (byte)Math.Clamp(value >> 16, 0, 255);

    /// <summary>PIL's RGB → L conversion (ITU-R 601-2 luma, fixed point).</summary>
    public static int Luma(byte r, byte g, byte b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;

    private static byte Clip(double value) => (byte)Math.Clamp((int)Math.Round(value, MidpointRounding.AwayFromZero), 0, 255);
}
