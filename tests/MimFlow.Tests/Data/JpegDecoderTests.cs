using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Tests.Data;

/// <summary>The managed JPEG decoder gives libvips' (libjpeg-turbo's) pixels bit for bit, and refuses what it does not handle.</summary>
public sealed class JpegDecoderTests
{
    /// <summary>A photo-like image: smooth colour waves plus noise (many AC coefficients, every Huffman code length).</summary>
    private static Image Noisy(int width, int height, int seed)
    {
        var random = new Random(seed);
        byte[] pixels = new byte[width * height * 3];
        double fx = random.Next(3, 40), fy = random.Next(3, 40);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < 3; c++)
                {
                    double wave = Math.Sin(x / fx + c) * Math.Cos(y / fy + 2 * c);
                    pixels[3 * (y * width + x) + c] = (byte)Math.Clamp(128 + 100 * wave + random.Next(-25, 26), 0, 255);
                }
        return Image.NewFromMemory(pixels, width, height, 3, Enums.BandFormat.Uchar).Copy(interpretation: Enums.Interpretation.Srgb);
    }

    private static byte[] Encode(Image image, int quality, Enums.ForeignSubsample subsample, int restart = 0, bool progressive = false) =>
        image.JpegsaveBuffer(q: quality, subsampleMode: subsample, restartInterval: restart, interlace: progressive, keep: Enums.ForeignKeep.None);

    private static byte[] Planar(byte[] interleaved, int width, int x0, int y0, int w, int h)
    {
        byte[] planar = new byte[3 * w * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++) planar[c * w * h + y * w + x] = interleaved[3 * ((y0 + y) * width + x0 + x) + c];
        return planar;
    }

    [Theory]
    [InlineData(640, 480, 90, Enums.ForeignSubsample.Auto, 0)]
    [InlineData(333, 517, 75, Enums.ForeignSubsample.On, 0)]
    [InlineData(101, 77, 95, Enums.ForeignSubsample.Off, 0)]
    [InlineData(250, 190, 60, Enums.ForeignSubsample.On, 3)]
    [InlineData(17, 9, 85, Enums.ForeignSubsample.On, 1)]
    [InlineData(7, 300, 92, Enums.ForeignSubsample.Off, 2)]
    public void Regions_equal_libvips_decodes_bit_for_bit(int width, int height, int quality, Enums.ForeignSubsample subsample, int restart)
    {
        using var image = Noisy(width, height, width * height);
        byte[] jpeg = Encode(image, quality, subsample, restart);
        using var decoded = Image.JpegloadBuffer(jpeg, access: Enums.Access.Random);
        byte[] full = decoded.WriteToMemory<byte>();
        var random = new Random(width);
        var decoder = new JpegRegionDecoder();
        for (int t = 0; t < 12; t++)
        {
            int w = t == 0 ? width : random.Next(1, width + 1), h = t == 0 ? height : random.Next(1, height + 1);
            int x0 = random.Next(0, width - w + 1), y0 = random.Next(0, height - h + 1);
            byte[] region = new byte[3 * w * h];
            Assert.True(decoder.TryDecode(jpeg, x0, y0, w, h, region), $"{width}×{height} q{quality} {subsample} restart {restart}: not decoded");
            Assert.Equal(Planar(full, width, x0, y0, w, h), region);
        }
    }

    [Fact]
    public void Unsupported_jpegs_are_left_to_libvips()
    {
        var decoder = new JpegRegionDecoder();
        using var image = Noisy(64, 48, 1);
        byte[] target = new byte[3 * 64 * 48];
        Assert.False(decoder.TryDecode(Encode(image, 80, Enums.ForeignSubsample.Auto, progressive: true), 0, 0, 64, 48, target));
        Assert.False(decoder.TryDecode(TestImages.GreyJpeg(64, 48), 0, 0, 64, 48, target));
        Assert.False(decoder.TryDecode(TestImages.CmykJpeg(64, 48), 0, 0, 64, 48, target));
        Assert.False(decoder.TryDecode(TestImages.AlphaPng(64, 48), 0, 0, 64, 48, target));
        byte[] jpeg = Encode(image, 80, Enums.ForeignSubsample.Auto);
        Assert.False(decoder.TryDecode(jpeg[..(jpeg.Length / 2)], 0, 0, 64, 48, target)); // runs out of data
        Assert.False(decoder.TryDecode(jpeg, 10, 10, 64, 48, target)); // region outside the image
    }

    [Fact]
    public void Damaged_entropy_data_never_throws()
    {
        using var image = Noisy(120, 90, 7);
        byte[] jpeg = Encode(image, 85, Enums.ForeignSubsample.Auto, restart: 2);
        var random = new Random(3);
        var decoder = new JpegRegionDecoder();
        byte[] target = new byte[3 * 120 * 90];
        for (int t = 0; t < 300; t++)
        {
            byte[] damaged = (byte[])jpeg.Clone();
            for (int k = 0; k < 1 + t % 5; k++) damaged[random.Next(damaged.Length / 3, damaged.Length)] = (byte)random.Next(256);
            _ = decoder.TryDecode(damaged, 0, 0, 120, 90, target); // true or false, never an exception
        }
    }

    [Fact]
    public void The_vector_idct_equals_the_scalar_one()
    {
        var random = new Random(11);
        short[] block = new short[64];
        int[] quant = new int[64];
        byte[] vector = new byte[64], scalar = new byte[64];
        for (int t = 0; t < 2000; t++)
        {
            for (int i = 0; i < 64; i++)
            {
                block[i] = (short)(random.Next(4) == 0 ? random.Next(-400, 401) : 0);
                quant[i] = random.Next(1, 60);
            }
            InverseDct.Islow(block, quant, vector, 8);
            InverseDct.IslowScalar(block, quant, scalar, 8);
            Assert.Equal(scalar, vector);
        }
    }

    [Fact]
    public void Rendering_with_the_managed_decoder_equals_rendering_with_libvips()
    {
        using var image = Noisy(500, 375, 5);
        byte[] jpeg = Encode(image, 90, Enums.ForeignSubsample.Auto);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);
        var recipe = new PretrainRecipe();
        for (int i = 0; i < 10; i++)
        {
            var random = StableRandom.For(4, (ulong)i);
            var parameters = recipe.Draw(header, ref random);
            byte[][] managed = recipe.Views.Select(v => new byte[v.Bytes]).ToArray();
            byte[][] libvips = recipe.Views.Select(v => new byte[v.Bytes]).ToArray();
            Augmenter.Render(jpeg, header, parameters, recipe.Views, managed.Select(b => new Memory<byte>(b)).ToArray());
            JpegRegionDecoder.Enabled = false;
            try
            {
                Augmenter.Render(jpeg, header, parameters, recipe.Views, libvips.Select(b => new Memory<byte>(b)).ToArray());
            }
            finally
            {
                JpegRegionDecoder.Enabled = true;
            }
            for (int v = 0; v < managed.Length; v++) Assert.Equal(libvips[v], managed[v]);
        }
    }

    [Fact]
    public void The_planar_resampler_stays_within_one_level_of_the_interleaved_one()
    {
        var random = new Random(2);
        for (int t = 0; t < 40; t++)
        {
            int w = random.Next(1, 300), h = random.Next(1, 300);
            byte[] rgb = new byte[3 * w * h];
            random.NextBytes(rgb);
            byte[] planar = new byte[3 * w * h];
            new PlanarImage(planar, w, h).FromInterleaved(rgb);
            double bw = Math.Min(w, random.NextDouble() * w + 0.5), bh = Math.Min(h, random.NextDouble() * h + 0.5);
            var box = new CropBox(random.NextDouble() * (w - bw), random.NextDouble() * (h - bh), bw, bh);
            int tw = random.Next(1, 130), th = random.Next(1, 130);
            var kernel = (ResampleKernel)(t % 4);
            byte[] reference = new byte[3 * tw * th];
            Resampler.ResizeRgb(rgb, w, h, 3 * w, box, reference, tw, th, kernel);
            byte[] output = new byte[3 * tw * th];
            var plan = PlanarResampler.Plan.For(w, h, box, tw, th, kernel);
            for (int c = 0; c < 3; c++) PlanarResampler.Resize(plan, planar.AsSpan(c * w * h, w * h), output.AsSpan(c * tw * th, tw * th), tw);
            for (int i = 0; i < tw * th; i++)
                for (int c = 0; c < 3; c++)
                    Assert.InRange(output[c * tw * th + i] - reference[3 * i + c], -1, 1);
        }
    }

    /// <summary>
    /// The planar resampler's bytes are one function of its inputs on every machine: the AVX-512 path (sixteen rows at
    /// a time), the AVX2 path and the one-value-at-a-time edge and fallback code all give these. The digest was taken
    /// on AVX-512 and the test passes with <c>DOTNET_EnableAVX512F=0</c>, <c>DOTNET_EnableAVX2=0</c> and
    /// <c>DOTNET_EnableHWIntrinsic=0</c> (and with the code before its AVX-512 and packed-store paths).
    /// </summary>
    [Fact]
    public void The_planar_resampler_gives_the_same_bytes_at_every_vector_width()
    {
        var random = new Random(7);
        using var digest = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        for (int t = 0; t < 24; t++)
        {
            int w = random.Next(8, 320), h = random.Next(8, 320);
            byte[] plane = new byte[w * h];
            random.NextBytes(plane);
            double bw = Math.Min(w, random.NextDouble() * w + 1), bh = Math.Min(h, random.NextDouble() * h + 1);
            var box = new CropBox(random.NextDouble() * (w - bw), random.NextDouble() * (h - bh), bw, bh);
            int tw = t % 3 == 0 ? 224 : random.Next(1, 260), th = t % 3 == 0 ? 224 : random.Next(1, 260);
            byte[] output = new byte[tw * th];
            PlanarResampler.Resize(plane, w, h, box, output, tw, th, tw, (ResampleKernel)(t % 4));
            digest.AppendData(output);
        }
        Assert.Equal("7D52EC19A5B9DBD480818BF4B28512BBC590CEC7AA88F507831B10A597CE1ACE", Convert.ToHexString(digest.GetHashAndReset()));
    }

    [Fact]
    public void Headers_read_without_libvips_equal_libvips_headers()
    {
        byte[][] inputs =
        [
            TestImages.Jpeg(640, 480), TestImages.OrientedJpeg(120, 80, 6), TestImages.OrientedJpeg(33, 17, 3), TestImages.OrientedJpeg(50, 40, 1),
            Encode(Noisy(77, 51, 3), 70, Enums.ForeignSubsample.Off, restart: 2), TestImages.GreyJpeg(30, 20), TestImages.CmykJpeg(30, 20),
            Encode(Noisy(64, 48, 2), 80, Enums.ForeignSubsample.Auto, progressive: true),
        ];
        foreach (byte[] input in inputs)
        {
            var managed = ImageHeader.Read(input, DecodeLimits.Default);
            JpegRegionDecoder.Enabled = false;
            try
            {
                Assert.Equal(ImageHeader.Read(input, DecodeLimits.Default), managed);
            }
            finally
            {
                JpegRegionDecoder.Enabled = true;
            }
        }
        var bomb = Assert.Throws<BadImageException>(() => ImageHeader.Read(TestImages.Jpeg(400, 300), new DecodeLimits(MaxPixels: 100_000)));
        Assert.Contains("decompression bomb", bomb.Reason);
    }

    [Theory]
    [InlineData(0.6)]
    [InlineData(1.4)]
    public void Whole_image_contrast_after_the_crop_matches_contrast_before_it(double factor)
    {
        // Dark left half, bright right half: the right half's own mean is far from the image's. (No value clips under
        // either factor: resampling and a clipped table do not commute, which is not what this test is about.)
        int width = 320, height = 240;
        byte[] pixels = new byte[3 * width * height];
        var random = new Random(4);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < 3; c++) pixels[3 * (y * width + x) + c] = (byte)Math.Clamp((x < width / 2 ? 60 : 150) + 10 * c + random.Next(-10, 11), 0, 255);
        using var image = Image.NewFromMemory(pixels, width, height, 3, Enums.BandFormat.Uchar).Copy(interpretation: Enums.Interpretation.Srgb);
        byte[] jpeg = Encode(image, 90, Enums.ForeignSubsample.Auto);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);

        // torchvision's order: contrast on the whole decoded image, then crop and resize.
        using var decoded = Image.JpegloadBuffer(jpeg);
        byte[] full = decoded.WriteToMemory<byte>();
        new Contrast(factor).Apply(new RgbImage(full, width, height));
        var crop = new CropBox(180, 40, 120, 150);
        byte[] reference = new byte[3 * 64 * 64];
        Resampler.ResizeRgb(full, width, height, 3 * width, crop, reference, 64, 64, ResampleKernel.Bicubic);

        // MimFlow's: crop and resize, then contrast around the whole image's mean (from the luma DC coefficients).
        var parameters = AugmentParams.Of(new ViewParams(crop, 64, 64, ResampleKernel.Bicubic, false, [new Contrast(factor) { WholeImage = true }]));
        byte[] view = new byte[3 * 64 * 64];
        Augmenter.Render(jpeg, header, parameters, [new ViewShape(64, 64)], [view]);
        double total = 0;
        int far = 0;
        for (int i = 0; i < 64 * 64; i++)
            for (int c = 0; c < 3; c++)
            {
                int d = Math.Abs(view[c * 4096 + i] - reference[3 * i + c]);
                total += d;
                if (d > 2) far++;
            }
        Assert.True(total / (3 * 4096) < 1.0, $"mean abs difference {total / (3 * 4096):F2}");
        Assert.True(far < 3 * 4096 / 100, $"{far} values differ by more than 2");

        // The view's own mean (the old behaviour) is far off here: that is what the whole-image mean fixes.
        byte[] own = new byte[3 * 64 * 64];
        Augmenter.Render(jpeg, header, AugmentParams.Of(new ViewParams(crop, 64, 64, ResampleKernel.Bicubic, false, [new Contrast(factor)])), [new ViewShape(64, 64)], [own]);
        double ownTotal = 0;
        for (int i = 0; i < 64 * 64; i++)
            for (int c = 0; c < 3; c++) ownTotal += Math.Abs(own[c * 4096 + i] - reference[3 * i + c]);
        Assert.True(ownTotal / (3 * 4096) > 5, $"view mean differs by only {ownTotal / (3 * 4096):F2}");
    }

    [Fact]
    public void The_dc_mean_is_within_a_level_of_the_full_decode_mean()
    {
        foreach (var (w, h, seed) in new[] { (640, 480, 1), (333, 517, 2), (101, 77, 3) })
        {
            byte[] jpeg = Encode(Noisy(w, h, seed), 90, Enums.ForeignSubsample.Auto);
            using var decoded = Image.JpegloadBuffer(jpeg);
            byte[] rgb = decoded.WriteToMemory<byte>();
            long sum = 0;
            for (int i = 0; i < rgb.Length; i += 3) sum += PixelOp.Luma(rgb[i], rgb[i + 1], rgb[i + 2]);
            Assert.True(new JpegRegionDecoder().TryLumaMean(jpeg, out double mean));
            Assert.InRange(mean - (double)sum / (w * h), -1.0, 1.0);
        }
    }

    [Theory]
    [InlineData(61, 47)] // 2,867 pixels: sixteen at a time, then three one by one
    [InlineData(43, 27)] // 1,161: sixteen at a time, eight, then one
    public void Every_pixel_operation_gives_the_same_bytes_on_planes_as_interleaved(int w, int h)
    {
        var random = new Random(9);
        byte[] rgb = new byte[3 * w * h];
        for (int i = 0; i < rgb.Length; i++) rgb[i] = (byte)Math.Clamp(128 + 90 * Math.Sin(i / 37.0) + random.Next(-30, 31), 0, 255);
        PixelOp[] ops =
        [
            new Brightness(1.3), new Brightness(0.7), new Contrast(1.4), new Contrast(0.6), new Saturation(1.35), new Saturation(0.2), new Hue(0.08),
            new Grayscale(), new GaussianBlur(1.3), new Solarize(100), new SolarizeAdd(60), new Posterize(3), new Invert(), new AutoContrast(),
            new Equalize(), new Sharpness(1.8), Affine.Rotate(17, w, h, ResampleKernel.Bicubic, 124, 116, 104),
            Affine.Rotate(-8, w, h, ResampleKernel.Bilinear, 1, 2, 3), new Affine(1, 0.21, 0, 0, 1, 0, ResampleKernel.Bicubic, 124, 116, 104),
            new Affine(1, 0, 0, -0.17, 1, 0, ResampleKernel.Bicubic, 124, 116, 104), new Affine(1, 0, 9.3, 0, 1, 0, ResampleKernel.Bicubic, 124, 116, 104),
            new Affine(1, 0, 0, 0, 1, -6.7, ResampleKernel.Bicubic, 124, 116, 104), new Affine(1, 0, 3, 0, 1, 0, ResampleKernel.Nearest, 9, 9, 9),
            new PhotometricShift(12, 1.2, true, 0.8, 20), new PhotometricShift(-20, 0.7, false, null, -36), new PhotometricShift(null, null, false, 1.45, null),
            new PhotometricShift(31.5, 1.5, false, 0.5, 34), new PhotometricShift(null, 0.5, true, null, -2),
        ];
        foreach (var op in ops) PlanarParity.AssertSameBytes(op, rgb, w, h);
    }
}
