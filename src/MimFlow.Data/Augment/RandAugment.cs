using MimFlow.Core.Randomness;

namespace MimFlow.Data.Augment;

/// <summary>
/// timm's RandAugment as BEiT fine-tunes with it (<c>rand-m9-mstd0.5-inc1</c>): <see cref="Layers"/> operations
/// drawn with replacement from the 15 "increasing" transforms, each applied with probability 0.5 at a magnitude
/// drawn from N(<see cref="Magnitude"/>, <see cref="MagnitudeStd"/>) clipped to [0, 10]; geometric operations fill
/// with timm's ImageNet mean colour (124, 116, 104) and resample bicubic.
/// </summary>
public sealed record RandAugment(double Magnitude = 9, double MagnitudeStd = 0.5, int Layers = 2, double Probability = 0.5)
{
    private const double LevelDenominator = 10;
    private static readonly string[] Transforms =
    [
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
        "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
        "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
    ];

    public IReadOnlyList<PixelOp> Draw(int width, int height, ref StableRandom random)
    {
        var ops = new List<PixelOp>();
        for (int layer = 0; layer < Layers; layer++)
        {
            string name = Transforms[random.NextInt(Transforms.Length)];
            if (random.NextDouble() > Probability) continue;
            double magnitude = MagnitudeStd > 0 ? Magnitude + MagnitudeStd * random.NextGaussian() : Magnitude;
            double level = Math.Clamp(magnitude, 0, LevelDenominator) / LevelDenominator;
            ops.Add(Make(name, level, width, height, ref random));
        }
        return ops;
    }

    private static PixelOp Make(string name, double level, int width, int height, ref StableRandom random)
    {
        const byte fillR = 124, fillG = 116, fillB = 104;
        const ResampleKernel kernel = ResampleKernel.Bicubic;
        return name switch
        {
            "AutoContrast" => new AutoContrast(),
            "Equalize" => new Equalize(),
            "Invert" => new Invert(),
            "Rotate" => Affine.Rotate(Negate(level * 30, ref random), width, height, kernel, fillR, fillG, fillB),
            "PosterizeIncreasing" => new Posterize(4 - (int)(level * 4)),
            "SolarizeIncreasing" => new Solarize(256 - (int)(level * 256)),
            "SolarizeAdd" => new SolarizeAdd((int)(level * 110)),
            "ColorIncreasing" => new Saturation(Enhance(level, ref random)),
            "ContrastIncreasing" => new Contrast(Enhance(level, ref random)),
            "BrightnessIncreasing" => new Brightness(Enhance(level, ref random)),
            "SharpnessIncreasing" => new Sharpness(Enhance(level, ref random)),
            "ShearX" => new Affine(1, Negate(level * 0.3, ref random), 0, 0, 1, 0, kernel, fillR, fillG, fillB),
            "ShearY" => new Affine(1, 0, 0, Negate(level * 0.3, ref random), 1, 0, kernel, fillR, fillG, fillB),
            "TranslateXRel" => new Affine(1, 0, Negate(level * 0.45, ref random) * width, 0, 1, 0, kernel, fillR, fillG, fillB),
            _ => new Affine(1, 0, 0, 0, 1, Negate(level * 0.45, ref random) * height, kernel, fillR, fillG, fillB),
        };
    }

    /// <summary>timm's _randomly_negate: the sign flips with probability 0.5.</summary>
    private static double Negate(double value, ref StableRandom random) => random.NextDouble() > 0.5 ? -value : value;

    /// <summary>timm's _enhance_increasing_level_to_arg: 1 ± 0.9·level, at least 0.1.</summary>
    private static double Enhance(double level, ref StableRandom random) => Math.Max(0.1, 1.0 + Negate(level * 0.9, ref random));
}

/// <summary>timm's RandomErasing (mode "pixel", one box): with <see cref="Probability"/>, a box of area share
/// 0.02–1/3 and log-uniform aspect 0.3–3.3 (10 tries) is filled with N(0, 1) noise in normalised space.</summary>
public sealed record RandomErasing(double Probability = 0.25, double MinArea = 0.02, double MaxArea = 1.0 / 3, double MinAspect = 0.3)
{
    public EraseBox? Draw(int view, int width, int height, ref StableRandom random)
    {
        if (random.NextDouble() > Probability) return null;
        double area = (double)width * height;
        double logMin = Math.Log(MinAspect), logMax = Math.Log(1 / MinAspect);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = random.Uniform(MinArea, MaxArea) * area;
            double aspect = Math.Exp(random.Uniform(logMin, logMax));
            int h = (int)Math.Round(Math.Sqrt(target * aspect), MidpointRounding.ToEven);
            int w = (int)Math.Round(Math.Sqrt(target / aspect), MidpointRounding.ToEven);
            if (w < width && h < height)
            {
                int top = random.NextInt(0, height - h), left = random.NextInt(0, width - w);
                return new EraseBox(view, left, top, w, h, random.NextUInt64());
            }
        }
        return null;
    }
}
