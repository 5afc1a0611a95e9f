using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;

namespace MimFlow.Tests.Data;

public sealed class AugmentTests
{
    [Fact]
    public void Random_resized_crops_stay_inside_with_scale_and_ratio_in_range()
    {
        var crop = new RandomResizedCrop();
        for (int i = 0; i < 2000; i++)
        {
            var random = StableRandom.For(3, (ulong)i);
            int width = 100 + i % 700, height = 80 + (i * 7) % 600;
            var box = crop.Draw(width, height, ref random);
            Assert.InRange(box.X, 0, width - box.Width);
            Assert.InRange(box.Y, 0, height - box.Height);
            Assert.True(box.Width >= 1 && box.Height >= 1);
            double share = box.Width * box.Height / (width * height);
            double ratio = box.Width / box.Height;
            bool fallback = box.Width == width || box.Height == height;
            if (!fallback)
            {
                Assert.InRange(share, 0.08 * 0.9, 1.0);
                Assert.InRange(ratio, 0.75 * 0.9, 4.0 / 3 * 1.1);
            }
        }
    }

    [Fact]
    public void Extreme_aspect_images_fall_back_to_the_largest_centred_crop_in_range()
    {
        var random = new StableRandom(1);
        var box = new RandomResizedCrop().Draw(1000, 10, ref random);
        Assert.Equal(new CropBox(493, 0, 13, 10), box);
    }

    [Fact]
    public void Jitter_draws_factors_in_range_and_a_permutation_of_the_three_operations()
    {
        var jitter = new ColorJitter();
        for (int i = 0; i < 500; i++)
        {
            var random = StableRandom.For(9, (ulong)i);
            var p = jitter.Draw(ref random);
            Assert.InRange(p.Brightness, 0.6, 1.4);
            Assert.InRange(p.Contrast, 0.6, 1.4);
            Assert.InRange(p.Saturation, 0.6, 1.4);
            Assert.Equal(Enum.GetValues<JitterOperation>().Order(), p.Order.Order());
        }
    }

    [Fact]
    public void Jitter_operations_act_as_pil_enhance()
    {
        byte[] pixels = [200, 100, 50, 10, 20, 30, 255, 255, 255];
        byte[] same = (byte[])pixels.Clone();
        ColorJitter.Apply(same, new ColorJitterParams(1, 1, 1, [JitterOperation.Brightness, JitterOperation.Contrast, JitterOperation.Saturation]));
        Assert.Equal(pixels, same);

        byte[] grey = (byte[])pixels.Clone();
        ColorJitter.Apply(grey, new ColorJitterParams(1, 1, 0, [JitterOperation.Saturation]));
        for (int i = 0; i < grey.Length; i += 3)
        {
            Assert.Equal(grey[i], grey[i + 1]);
            Assert.Equal(grey[i], grey[i + 2]);
            Assert.Equal(ColorJitter.Luma(pixels[i], pixels[i + 1], pixels[i + 2]), grey[i]);
        }

        byte[] flat = (byte[])pixels.Clone();
        ColorJitter.Apply(flat, new ColorJitterParams(1, 0, 1, [JitterOperation.Contrast]));
        Assert.All(flat, v => Assert.Equal(flat[0], v));

        byte[] bright = (byte[])pixels.Clone();
        ColorJitter.Apply(bright, new ColorJitterParams(1.4, 1, 1, [JitterOperation.Brightness]));
        Assert.Equal(new byte[] { 255, 140, 70, 14, 28, 42, 255, 255, 255 }, bright);
    }
}
