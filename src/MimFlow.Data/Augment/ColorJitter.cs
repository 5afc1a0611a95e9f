using MimFlow.Core.Randomness;

namespace MimFlow.Data.Augment;

/// <summary>
/// torchvision's ColorJitter: brightness, contrast and saturation factors uniform in [1 − s, 1 + s], hue shift
/// uniform in [−h, h], applied in a random order; an operation with strength 0 is left out. The draw is a list
/// of <see cref="PixelOp"/>s, applied as PIL does (see each op).
/// </summary>
public sealed record ColorJitter(double Brightness = 0.4, double Contrast = 0.4, double Saturation = 0.4, double Hue = 0)
{
    /// <summary>Contrast blends with the whole image's mean grey (the jitter precedes the crop, as in BEiT's pretraining).</summary>
    public bool WholeImageContrast { get; init; }

    public IReadOnlyList<PixelOp> Draw(ref StableRandom random)
    {
        JitterOperation[] order = [JitterOperation.Brightness, JitterOperation.Contrast, JitterOperation.Saturation, JitterOperation.Hue];
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = random.NextInt(0, i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        double b = random.Uniform(1 - Brightness, 1 + Brightness);
        double c = random.Uniform(1 - Contrast, 1 + Contrast);
        double s = random.Uniform(1 - Saturation, 1 + Saturation);
        double h = random.Uniform(-Hue, Hue);
        var ops = new List<PixelOp>(4);
        foreach (var operation in order)
        {
            switch (operation)
            {
                case JitterOperation.Brightness when Brightness > 0: ops.Add(new Brightness(b)); break;
                case JitterOperation.Contrast when Contrast > 0: ops.Add(new Contrast(c) { WholeImage = WholeImageContrast }); break;
                case JitterOperation.Saturation when Saturation > 0: ops.Add(new Saturation(s)); break;
                case JitterOperation.Hue when Hue > 0: ops.Add(new Hue(h)); break;
            }
        }
        return ops;
    }
}
