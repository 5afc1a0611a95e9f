using MimFlow.Core.Randomness;

namespace MimFlow.Data.Augment;

/// <summary>
/// torchvision's RandomResizedCrop box: up to 10 tries of an area share uniform in <see cref="MinScale"/>..
/// <see cref="MaxScale"/> and a log-uniform aspect ratio in <see cref="MinRatio"/>..<see cref="MaxRatio"/>, sides
/// rounded half-to-even as Python's round; after 10 misses, the largest centred crop within the ratio range.
/// </summary>
public sealed record RandomResizedCrop(double MinScale = 0.08, double MaxScale = 1.0, double MinRatio = 3.0 / 4, double MaxRatio = 4.0 / 3)
{
    public CropBox Draw(int width, int height, ref StableRandom random)
    {
        double area = (double)width * height;
        double logMin = Math.Log(MinRatio), logMax = Math.Log(MaxRatio);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = area * random.Uniform(MinScale, MaxScale);
            double aspect = Math.Exp(random.Uniform(logMin, logMax));
            int w = (int)Math.Round(Math.Sqrt(targetArea * aspect), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(targetArea / aspect), MidpointRounding.ToEven);
            if (w > 0 && w <= width && h > 0 && h <= height)
            {
                int top = random.NextInt(0, height - h);
                int left = random.NextInt(0, width - w);
                return new CropBox(left, top, w, h);
            }
        }
        double inRatio = (double)width / height;
        int cw, ch;
        if (inRatio < MinRatio)
        {
            cw = width;
            ch = (int)Math.Round(cw / MinRatio, MidpointRounding.ToEven);
        }
        else if (inRatio > MaxRatio)
        {
            ch = height;
            cw = (int)Math.Round(ch * MaxRatio, MidpointRounding.ToEven);
        }
        else
        {
            cw = width;
            ch = height;
        }
        return new CropBox((width - cw) / 2, (height - ch) / 2, cw, ch);
    }
}
