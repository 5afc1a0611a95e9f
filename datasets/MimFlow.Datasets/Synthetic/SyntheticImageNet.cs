using MimFlow.Core.Randomness;
using MimFlow.Data.Sources.Layouts;

namespace MimFlow.Datasets.Synthetic;

/// <summary>
/// ImageNet layout. Class k is a shape (k mod 7), a texture, and a pair of colours; each image shows one to three
/// instances of its class's shape at random position, size, rotation and colour jitter, over a random low-saturation
/// background with small distractor shapes and sensor noise, so that a classifier has to learn the class cues.
/// </summary>
internal sealed class SyntheticImageNet(SynthesisOptions options) : ISyntheticSet
{
    private readonly ClassLook[] classes = Enumerable.Range(0, options.ClassCount).Select(k => ClassLook.For(options.Seed, k)).ToArray();

    public IReadOnlyList<string> ClassNames => classes.Select(c => c.Wnid).ToList();

    public IReadOnlyList<string> ClassDescriptions => classes.Select(c => $"{c.Wnid}: {c.Shape}, {c.Material.Texture}, hue {c.Hue:F3}").ToList();

    /// <summary>
    /// Images are spread evenly over the classes; <c>round(images·fraction)</c> of them are validation images, also
    /// spread evenly, and every class keeps at least one training image.
    /// </summary>
    public IReadOnlyList<SynthesisItem> PlanItems()
    {
        int k = classes.Length;
        int validationTotal = (int)Math.Round(options.Images * options.ValidationFraction, MidpointRounding.AwayFromZero);
        var items = new List<SynthesisItem>(options.Images);
        int validationNumber = 0;
        for (int c = 0; c < k; c++)
        {
            int count = options.Images / k + (c < options.Images % k ? 1 : 0);
            int validation = Math.Max(0, Math.Min(count - 1, validationTotal / k + (c < validationTotal % k ? 1 : 0)));
            for (int j = 0; j < count; j++)
            {
                bool training = j < count - validation;
                string wnid = classes[c].Wnid;
                string name = training ? $"{wnid}_{j + 1}{ImageNetLayout.ImageExtension}" : $"ILSVRC2012_val_{++validationNumber:D8}{ImageNetLayout.ImageExtension}";
                string folder = training ? ImageNetLayout.TrainFolder : ImageNetLayout.ValidationFolder;
                items.Add(new SynthesisItem(items.Count, training, c, [Path.Combine(folder, wnid, name)]));
            }
        }
        return items;
    }

    public IEnumerable<(string RelativePath, byte[] Content)> Render(SynthesisItem item)
    {
        var random = StableRandom.For(options.Seed, "imagenet-image", (ulong)item.Index);
        var canvas = Canvas.WithRandomSize(options, ref random, withLabels: false);
        int width = canvas.Width, height = canvas.Height;
        double side = Math.Min(width, height);

        var background = new Material(
            Rgb.FromHsv(random.NextDouble(), random.Uniform(0.1, 0.35), random.Uniform(0.35, 0.85)),
            Rgb.FromHsv(random.NextDouble(), random.Uniform(0.1, 0.35), random.Uniform(0.35, 0.85)),
            TextureKind.Waves, random.Uniform(1.0, 2.5) * side, random.Uniform(0, Math.PI));
        canvas.Fill((_, _) => true, background, 0, 0, 0, shading: random.Uniform(-0.3, 0.3));

        int distractors = random.NextInt(0, 2);
        for (int d = 0; d < distractors; d++)
        {
            var look = new Material(Rgb.FromHsv(random.NextDouble(), random.Uniform(0.2, 0.6), random.Uniform(0.3, 0.9)), default, TextureKind.Solid, 1, 0);
            canvas.Fill(RandomShape(ref random, (ShapeKind)random.NextInt(Shape.KindCount), width, height, side * random.Uniform(0.05, 0.1)), look, 0);
        }

        var cls = classes[item.ClassIndex];
        double roll = random.NextDouble();
        int instances = roll < 0.7 ? 1 : roll < 0.9 ? 2 : 3;
        double scale = instances == 1 ? 1.0 : 0.7;
        for (int n = 0; n < instances; n++)
        {
            double hueJitter = random.Uniform(-0.03, 0.03), brightness = random.Uniform(0.8, 1.15);
            var material = cls.Material.Recoloured(
                Rgb.FromHsv(cls.Hue + hueJitter, 0.75, 0.9).Scale(brightness),
                Rgb.FromHsv(cls.SecondHue + hueJitter, 0.6, 0.45).Scale(brightness));
            canvas.Fill(RandomShape(ref random, cls.Shape, width, height, side * scale * random.Uniform(0.18, 0.35)), material, 0);
        }
        canvas.AddNoise(ref random, random.Uniform(2, 6));
        yield return (item.Files[0], canvas.EncodeJpeg(options.JpegQuality));
    }

    private static Shape RandomShape(ref StableRandom random, ShapeKind kind, int width, int height, double radius) =>
        new(kind,
            random.Uniform(radius * 0.6, Math.Max(radius * 0.6 + 1, width - radius * 0.6)),
            random.Uniform(radius * 0.6, Math.Max(radius * 0.6 + 1, height - radius * 0.6)),
            radius, random.Uniform(0.75, 1.33), random.Uniform(0, 2 * Math.PI));

    /// <summary>What makes class k recognisable: shape, texture and colours, fixed by (seed, k).</summary>
    private sealed record ClassLook(string Wnid, ShapeKind Shape, double Hue, double SecondHue, Material Material)
    {
        public static ClassLook For(ulong seed, int k)
        {
            var random = StableRandom.For(seed, "imagenet-class", (ulong)k);
            // Golden-ratio hue steps keep neighbouring class indices far apart on the colour wheel.
            double hue = (k * 0.6180339887 + random.Uniform(0, 0.05)) % 1;
            double secondHue = hue + random.Uniform(0.25, 0.75);
            var texture = (TextureKind)((k / Synthetic.Shape.KindCount + k) % Material.TextureCount);
            var material = new Material(default, default, texture, random.Uniform(6, 16), random.Uniform(0, Math.PI));
            // Sorted wnids must follow class indices, as ImageNet's class index is the wnid sort order.
            return new ClassLook($"n{k + 1:D8}", (ShapeKind)(k % Synthetic.Shape.KindCount), hue, secondHue, material);
        }
    }
}
