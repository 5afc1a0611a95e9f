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
    public void Jitter_draws_factors_in_range_and_a_permutation_of_the_operations()
    {
        var jitter = new ColorJitter(0.4, 0.4, 0.2, 0.1);
        for (int i = 0; i < 500; i++)
        {
            var random = StableRandom.For(9, (ulong)i);
            var ops = jitter.Draw(ref random);
            Assert.Equal(["Brightness", "Contrast", "Hue", "Saturation"], ops.Select(o => o.GetType().Name).Order());
            Assert.InRange(ops.OfType<Brightness>().Single().Factor, 0.6, 1.4);
            Assert.InRange(ops.OfType<Contrast>().Single().Factor, 0.6, 1.4);
            Assert.InRange(ops.OfType<Saturation>().Single().Factor, 0.8, 1.2);
            Assert.InRange(ops.OfType<Hue>().Single().Shift, -0.1, 0.1);
        }
        var noHue = new ColorJitter();
        var r = new StableRandom(1);
        Assert.DoesNotContain(noHue.Draw(ref r), o => o is Hue);
    }

    private static RgbImage Pixels(params byte[] values) => new(values, values.Length / 3, 1);

    [Fact]
    public void Enhance_operations_act_as_pil()
    {
        byte[] pixels = [200, 100, 50, 10, 20, 30, 255, 255, 255];
        var same = Pixels((byte[])pixels.Clone());
        foreach (PixelOp op in new PixelOp[] { new Brightness(1), new Contrast(1), new Saturation(1), new Hue(0), new Sharpness(1) }) op.Apply(same);
        Assert.Equal(pixels, same.Data);

        var grey = Pixels((byte[])pixels.Clone());
        new Saturation(0).Apply(grey);
        for (int i = 0; i < 9; i += 3)
        {
            Assert.Equal(PixelOp.Luma(pixels[i], pixels[i + 1], pixels[i + 2]), grey.Data[i]);
            Assert.Equal(grey.Data[i], grey.Data[i + 1]);
            Assert.Equal(grey.Data[i], grey.Data[i + 2]);
        }

        var flat = Pixels((byte[])pixels.Clone());
        new Contrast(0).Apply(flat);
        Assert.All(flat.Data, v => Assert.Equal(flat.Data[0], v));

        var bright = Pixels((byte[])pixels.Clone());
        new Brightness(1.4).Apply(bright);
        Assert.Equal(new byte[] { 255, 140, 70, 14, 28, 42, 255, 255, 255 }, bright.Data);
    }

    [Fact]
    public void Tone_operations_map_values_as_pil_image_ops()
    {
        var solarized = Pixels(10, 127, 128, 200, 255, 0);
        new Solarize(128).Apply(solarized);
        Assert.Equal(new byte[] { 10, 127, 127, 55, 0, 0 }, solarized.Data);

        var posterized = Pixels(255, 130, 7, 64, 200, 31);
        new Posterize(2).Apply(posterized);
        Assert.Equal(new byte[] { 192, 128, 0, 64, 192, 0 }, posterized.Data);

        var added = Pixels(100, 127, 128, 250, 10, 0);
        new SolarizeAdd(50).Apply(added);
        Assert.Equal(new byte[] { 150, 177, 128, 250, 60, 50 }, added.Data);

        var stretched = Pixels(0, 10, 20, 128, 138, 148);
        new AutoContrast().Apply(stretched);
        Assert.Equal(new byte[] { 0, 0, 0, 255, 255, 255 }, stretched.Data);

        var inverted = Pixels(0, 100, 255);
        new Invert().Apply(inverted);
        Assert.Equal(new byte[] { 255, 155, 0 }, inverted.Data);
    }

    [Fact]
    public void Hue_shift_round_trips_and_rotates_primaries()
    {
        var (h, s, v) = Hue.ToHsv(255, 0, 0);
        Assert.Equal((0, 255, 255), ((int)h, (int)s, (int)v));
        var red = Pixels(255, 0, 0);
        new Hue(1.0 / 3).Apply(red);
        Assert.True(red.Data[1] > 200 && red.Data[0] < 60 && red.Data[2] < 60, $"a third of the wheel turns red to green, got {string.Join(",", red.Data)}");
        var grey = Pixels(90, 90, 90);
        new Hue(0.25).Apply(grey);
        Assert.Equal(new byte[] { 90, 90, 90 }, grey.Data);
    }

    [Fact]
    public void Affine_identity_keeps_pixels_and_translation_fills_with_the_fill_colour()
    {
        byte[] data = Enumerable.Range(0, 4 * 4 * 3).Select(i => (byte)(i * 5)).ToArray();
        var image = new RgbImage((byte[])data.Clone(), 4, 4);
        new Affine(1, 0, 0, 0, 1, 0, ResampleKernel.Bicubic, 1, 2, 3).Apply(image);
        Assert.Equal(data, image.Data);

        var shifted = new RgbImage((byte[])data.Clone(), 4, 4);
        new Affine(1, 0, 2, 0, 1, 0, ResampleKernel.Nearest, 1, 2, 3).Apply(shifted);
        Assert.Equal(data[6..9], shifted.Data[0..3]);
        Assert.Equal(new byte[] { 1, 2, 3 }, shifted.Data[9..12]);

        var rotated = new RgbImage((byte[])data.Clone(), 4, 4);
        Affine.Rotate(180, 4, 4, ResampleKernel.Nearest, 0, 0, 0).Apply(rotated);
        Assert.Equal(data[^3..], rotated.Data[0..3]);
    }

    [Fact]
    public void Rand_augment_draws_two_layers_at_most_with_magnitudes_in_timm_ranges()
    {
        var policy = new RandAugment();
        var counts = new List<int>();
        for (int i = 0; i < 2000; i++)
        {
            var random = StableRandom.For(4, (ulong)i);
            var ops = policy.Draw(224, 224, ref random);
            counts.Add(ops.Count);
            foreach (var op in ops)
            {
                switch (op)
                {
                    case Posterize p: Assert.InRange(p.Bits, 0, 4); break;
                    case Solarize s: Assert.InRange(s.Threshold, 0, 256); break;
                    case SolarizeAdd a: Assert.InRange(a.Addition, 0, 110); break;
                    case Brightness b: Assert.InRange(b.Factor, 0.1, 1.9); break;
                    case Affine f: Assert.InRange(Math.Abs(f.B) + Math.Abs(f.D), 0, 2.0); break;
                }
            }
        }
        Assert.InRange(counts.Average(), 0.9, 1.1);
        Assert.InRange(counts.Count(c => c == 0) / 2000.0, 0.2, 0.3);
    }

    [Fact]
    public void Random_erasing_hits_a_quarter_of_images_with_boxes_inside()
    {
        var erasing = new RandomErasing();
        int hits = 0;
        for (int i = 0; i < 4000; i++)
        {
            var random = StableRandom.For(5, (ulong)i);
            if (erasing.Draw(0, 224, 224, ref random) is not { } box) continue;
            hits++;
            Assert.InRange(box.X + box.Width, 1, 224);
            Assert.InRange(box.Y + box.Height, 1, 224);
            Assert.InRange(box.Width * box.Height, 0.015 * 224 * 224, 0.34 * 224 * 224);
        }
        Assert.InRange(hits / 4000.0, 0.22, 0.28);
    }

    [Fact]
    public void Affine_interior_fast_path_gives_the_interleaved_codes_bytes_for_rotations_shears_and_translations()
    {
        var random = new Random(23);
        foreach (var (w, h) in new[] { (224, 224), (61, 23), (5, 7), (3, 3) })
        {
            byte[] rgb = new byte[3 * w * h];
            random.NextBytes(rgb);
            var ops = new List<Affine>();
            foreach (var kernel in new[] { ResampleKernel.Bicubic, ResampleKernel.Bilinear })
            {
                foreach (double degrees in new[] { 0.0, 90, -180, 13.5, -27.3, 30 }) ops.Add(Affine.Rotate(degrees, w, h, kernel, 124, 116, 104));
                foreach (double shear in new[] { 0.3, -0.27, 0.125 })
                {
                    ops.Add(new Affine(1, shear, 0, 0, 1, 0, kernel, 124, 116, 104));
                    ops.Add(new Affine(1, 0, 0, shear, 1, 0, kernel, 124, 116, 104));
                }
                foreach (double shift in new[] { 0.45, -0.3825, 2.0, -0.5 })
                {
                    ops.Add(new Affine(1, 0, shift * w, 0, 1, 0, kernel, 124, 116, 104));
                    ops.Add(new Affine(1, 0, 0, 0, 1, shift * h, kernel, 124, 116, 104));
                }
                for (int k = 0; k < 6; k++)
                    ops.Add(new Affine(1 + 0.2 * (random.NextDouble() - 0.5), random.NextDouble() - 0.5, 3 * (random.NextDouble() - 0.5),
                        random.NextDouble() - 0.5, 1 + 0.2 * (random.NextDouble() - 0.5), 3 * (random.NextDouble() - 0.5), kernel, 1, 2, 3));
            }
            foreach (var op in ops) PlanarParity.AssertSameBytes(op, rgb, w, h);
        }
    }

    [Fact]
    public void Every_rand_augment_draw_gives_the_interleaved_codes_bytes_on_planes()
    {
        // All fifteen transforms at drawn magnitudes and signs, on smooth images (one with a flat channel, which
        // autocontrast and equalize leave alone) at widths that end mid-vector.
        var policy = new RandAugment(Probability: 1.0);
        var noise = new Random(5);
        foreach (var (w, h, draws) in new[] { (224, 224, 40), (61, 23, 150), (7, 5, 150) })
            foreach (bool flatBlue in new[] { false, true })
            {
                byte[] rgb = new byte[3 * w * h];
                for (int i = 0; i < rgb.Length; i++)
                    rgb[i] = flatBlue && i % 3 == 2 ? (byte)77 : (byte)Math.Clamp(40 + 150.0 * (i / 3 % w) / w + 60.0 * (i / 3 / w) / h + 20 * (i % 3) + noise.Next(-9, 10), 0, 255);
                for (int d = 0; d < draws; d++)
                {
                    var random = StableRandom.For(5, (ulong)d);
                    foreach (var op in policy.Draw(w, h, ref random)) PlanarParity.AssertSameBytes(op, rgb, w, h);
                }
            }
    }

    [Fact]
    public void Gaussian_blur_gives_the_interleaved_codes_bytes_on_planes_at_every_radius_and_width()
    {
        var random = new Random(11);
        foreach (var (w, h) in new[] { (224, 224), (96, 96), (61, 23), (17, 9) })
        {
            byte[] rgb = new byte[3 * w * h];
            random.NextBytes(rgb);
            foreach (double radius in new[] { 0.1, 0.45, 1.0, 1.3, 1.77, 2.0 }) PlanarParity.AssertSameBytes(new GaussianBlur(radius), rgb, w, h);
        }
    }
}
