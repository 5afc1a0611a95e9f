using MimFlow.Core.Randomness;
using MimFlow.Data.Sources.Layouts;

namespace MimFlow.Datasets.Synthetic;

/// <summary>
/// ADE20K layout. Each scene is painted as layers (upper "stuff" region above a wavy horizon, ground below, an
/// optional large structure, then objects and a few unlabelled "other" patches); every layer writes its class
/// into the label map on exactly the pixels it paints, so labels match the image. Each class has one look
/// (colours and texture) fixed by the seed, varied per image in brightness only.
/// </summary>
internal sealed class SyntheticAde20k(SynthesisOptions options) : ISyntheticSet
{
    // ADE20K labels (1-based) of regions that fill the top or bottom of a scene, and of large structures.
    private static readonly int[] UpperStuff = [3, 1, 6];
    private static readonly int[] GroundStuff = [4, 7, 10, 14, 12, 30, 22, 27, 47];
    private static readonly int[] Structures = [2, 1, 17, 5, 26, 49, 69];

    private readonly Material[] looks = Enumerable.Range(0, Ade20kLayout.ClassCount + 1).Select(c => LookFor(options.Seed, c)).ToArray();

    public IReadOnlyList<string> ClassNames => Ade20kLayout.ClassNames.Take(options.ClassCount).ToList();

    public IReadOnlyList<string> ClassDescriptions =>
        Enumerable.Range(1, options.ClassCount).Select(c => $"{c} {Ade20kLayout.ClassNames[c - 1]}: {looks[c].Texture}").ToList();

    public IReadOnlyList<SynthesisItem> PlanItems()
    {
        int validation = (int)Math.Round(options.Images * options.ValidationFraction, MidpointRounding.AwayFromZero);
        int training = options.Images - validation;
        var items = new List<SynthesisItem>(options.Images);
        for (int i = 0; i < options.Images; i++)
        {
            bool isTraining = i < training;
            string name = Ade20kLayout.ImageName(isTraining, isTraining ? i + 1 : i - training + 1);
            string images = Path.GetRelativePath("/", Ade20kLayout.ImagesFolder("/", isTraining));
            string annotations = Path.GetRelativePath("/", Ade20kLayout.AnnotationsFolder("/", isTraining));
            items.Add(new SynthesisItem(i, isTraining, -1,
                [Path.Combine(images, name + Ade20kLayout.ImageExtension), Path.Combine(annotations, name + Ade20kLayout.AnnotationExtension)]));
        }
        return items;
    }

    public IEnumerable<(string RelativePath, byte[] Content)> Render(SynthesisItem item)
    {
        var random = StableRandom.For(options.Seed, "ade20k-image", (ulong)item.Index);
        var canvas = Canvas.WithRandomSize(options, ref random, withLabels: true);
        int width = canvas.Width, height = canvas.Height;
        double side = Math.Min(width, height);
        double brightness = random.Uniform(0.75, 1.2);

        int upper = Pick(ref random, UpperStuff), ground = Pick(ref random, GroundStuff);
        double horizon = height * random.Uniform(0.3, 0.6), amplitude = height * random.Uniform(0, 0.06), phase = random.Uniform(0, 2 * Math.PI);
        double waves = random.Uniform(1, 3) * 2 * Math.PI / width;
        Paint(canvas, (_, y) => true, ground, brightness, 0, 0);
        Paint(canvas, (x, y) => y < horizon + amplitude * Math.Sin(waves * x + phase), upper, brightness, 0, 0);

        if (random.NextBool(0.6))
        {
            int structure = Pick(ref random, Structures);
            double left = random.Uniform(0, width * 0.7), right = left + width * random.Uniform(0.15, 0.45);
            double top = horizon - height * random.Uniform(0.1, 0.3);
            Paint(canvas, (x, y) => x >= left && x <= right && y >= top && y <= horizon + amplitude, structure, brightness, left, top);
        }

        int objects = random.NextInt(2, 6);
        for (int n = 0; n < objects; n++)
        {
            int label = random.NextInt(1, options.ClassCount);
            var shape = new Shape((ShapeKind)random.NextInt(Shape.KindCount),
                random.Uniform(0, width), random.Uniform(horizon * 0.8, height),
                side * random.Uniform(0.05, 0.2), random.Uniform(0.6, 1.6), random.Uniform(0, 2 * Math.PI));
            canvas.Fill(shape, looks[label].Recoloured(looks[label].Primary.Scale(brightness), looks[label].Secondary.Scale(brightness)), (byte)label);
        }

        // Unlabelled clutter: label 0 ("other"), which evaluation ignores.
        int clutter = random.NextInt(0, 2);
        for (int n = 0; n < clutter; n++)
        {
            var shape = new Shape((ShapeKind)random.NextInt(Shape.KindCount), random.Uniform(0, width), random.Uniform(0, height),
                side * random.Uniform(0.03, 0.08), random.Uniform(0.6, 1.6), random.Uniform(0, 2 * Math.PI));
            var look = new Material(Rgb.FromHsv(random.NextDouble(), random.Uniform(0, 0.3), random.Uniform(0.2, 0.9)), default, TextureKind.Solid, 1, 0);
            canvas.Fill(shape, look, 0);
        }

        canvas.AddNoise(ref random, random.Uniform(2, 5));
        yield return (item.Files[0], canvas.EncodeJpeg(options.JpegQuality));
        yield return (item.Files[1], canvas.EncodeLabelsPng());
    }

    private void Paint(Canvas canvas, Func<double, double, bool> inside, int label, double brightness, double originX, double originY)
    {
        var look = looks[label];
        canvas.Fill(inside, look.Recoloured(look.Primary.Scale(brightness), look.Secondary.Scale(brightness)), originX, originY, (byte)label, shading: 0.3);
    }

    /// <summary>A stuff class from <paramref name="preferred"/> that the class count allows, else any allowed class.</summary>
    private int Pick(ref StableRandom random, int[] preferred)
    {
        int[] allowed = preferred.Where(c => c <= options.ClassCount).ToArray();
        return allowed.Length > 0 ? allowed[random.NextInt(allowed.Length)] : random.NextInt(1, options.ClassCount);
    }

    private static Material LookFor(ulong seed, int label)
    {
        var random = StableRandom.For(seed, "ade20k-class", (ulong)label);
        double hue = random.NextDouble();
        return new Material(
            Rgb.FromHsv(hue, random.Uniform(0.3, 0.85), random.Uniform(0.45, 0.95)),
            Rgb.FromHsv(hue + random.Uniform(-0.15, 0.15), random.Uniform(0.2, 0.7), random.Uniform(0.2, 0.6)),
            (TextureKind)random.NextInt(Material.TextureCount), random.Uniform(5, 24), random.Uniform(0, Math.PI));
    }
}
