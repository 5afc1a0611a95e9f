using System.Text.Json;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Tests.Data;

public sealed class DecodeTests
{
    private static byte[] RenderOne(byte[] encoded, AugmentParams parameters)
    {
        var header = ImageHeader.Read(encoded, DecodeLimits.Default);
        var shapes = parameters.Views.Select(v => new ViewShape(v.Width, v.Height)).ToArray();
        var outputs = shapes.Select(s => new byte[s.Bytes]).ToArray();
        Augmenter.Render(encoded, header, parameters, shapes, outputs.Select(o => new Memory<byte>(o)).ToArray());
        return outputs.SelectMany(o => o).ToArray();
    }

    [Fact]
    public void Replaying_stored_params_on_the_original_bytes_gives_identical_pixels()
    {
        byte[] jpeg = TestImages.Jpeg(640, 480);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);
        var recipe = new PretrainRecipe();
        for (int i = 0; i < 8; i++)
        {
            var random = StableRandom.For(11, (ulong)i);
            var drawn = recipe.Draw(header, ref random);
            string stored = JsonSerializer.Serialize(drawn);
            var replayed = JsonSerializer.Deserialize<AugmentParams>(stored)!;
            Assert.Equal(RenderOne(jpeg, drawn), RenderOne(jpeg, replayed));
        }
    }

    [Fact]
    public void Shrink_on_load_picks_the_largest_factor_keeping_the_crop_at_least_the_output()
    {
        var header = ImageHeader.Read(TestImages.Jpeg(2000, 1800), DecodeLimits.Default);
        Assert.Equal(8, RegionDecoder.ShrinkFactor(header, new CropBox(0, 0, 1800, 1800), 224, 224));
        Assert.Equal(4, RegionDecoder.ShrinkFactor(header, new CropBox(0, 0, 1000, 900), 224, 224));
        Assert.Equal(2, RegionDecoder.ShrinkFactor(header, new CropBox(0, 0, 460, 500), 224, 224));
        Assert.Equal(1, RegionDecoder.ShrinkFactor(header, new CropBox(0, 0, 447, 900), 224, 224));
        var png = ImageHeader.Read(TestImages.AlphaPng(2000, 1800), DecodeLimits.Default);
        Assert.Equal(1, RegionDecoder.ShrinkFactor(png, new CropBox(0, 0, 1800, 1800), 224, 224));
    }

    [Fact]
    public void A_shrunk_decode_matches_a_full_decode_closely()
    {
        byte[] jpeg = TestImages.Jpeg(1800, 1800);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);
        var parameters = AugmentParams.Of(new ViewParams(new CropBox(100, 200, 1000, 1000), 224, 224, ResampleKernel.Bicubic, false, []));
        byte[] shrunk = RenderOne(jpeg, parameters);
        using var full = Image.NewFromBuffer(jpeg).Crop(100, 200, 1000, 1000).Resize(0.224, Enums.Kernel.Cubic, gap: 0.0);
        byte[] reference = full.WriteToMemory<byte>();
        double meanError = 0;
        int plane = 224 * 224;
        for (int i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) meanError += Math.Abs(shrunk[c * plane + i] - reference[3 * i + c]);
        Assert.True(meanError / (3 * plane) < 3, $"mean abs difference {meanError / (3 * plane):F2}");
    }

    [Fact]
    public void Flip_mirrors_the_view_horizontally()
    {
        byte[] jpeg = TestImages.Jpeg(300, 300);
        var crop = new CropBox(0, 0, 300, 300);
        byte[] plain = RenderOne(jpeg, AugmentParams.Of(new ViewParams(crop, 64, 64, ResampleKernel.Bicubic, false, [])));
        byte[] flipped = RenderOne(jpeg, AugmentParams.Of(new ViewParams(crop, 64, 64, ResampleKernel.Bicubic, true, [])));
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                    Assert.Equal(plain[c * 4096 + y * 64 + x], flipped[c * 4096 + y * 64 + 63 - x]);
    }

    [Theory]
    [InlineData("grey")]
    [InlineData("cmyk")]
    [InlineData("png16")]
    [InlineData("alpha")]
    public void Non_srgb_inputs_become_8_bit_rgb_with_the_same_picture(string kind)
    {
        byte[] encoded = kind switch
        {
            "grey" => TestImages.GreyJpeg(200, 200),
            "cmyk" => TestImages.CmykJpeg(200, 200),
            "png16" => TestImages.Png16(200, 200),
            _ => TestImages.AlphaPng(200, 200),
        };
        byte[] view = RenderOne(encoded, AugmentParams.Of(new ViewParams(new CropBox(0, 0, 200, 200), 32, 32, ResampleKernel.Bicubic, false, [])));
        int plane = 32 * 32;
        // The right half is blue in the source: colour inputs must stay blue there, grey ones grey.
        int brightRightBlue = view[2 * plane + 24 * 32 + 24], rightRed = view[24 * 32 + 24];
        if (kind == "grey")
        {
            Assert.Equal(view[24 * 32 + 24], view[plane + 24 * 32 + 24]);
        }
        else
        {
            Assert.True(brightRightBlue > rightRed + 60, $"{kind}: blue {brightRightBlue} vs red {rightRed}");
        }
    }

    [Fact]
    public void Exif_orientation_is_applied_before_cropping()
    {
        // Orientation 6 means "rotate 90° clockwise to display": a 120×80 stored image displays as 80×120.
        byte[] jpeg = TestImages.OrientedJpeg(120, 80, 6);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);
        Assert.Equal((80, 120), (header.Width, header.Height));
        byte[] view = RenderOne(jpeg, AugmentParams.Of(new ViewParams(new CropBox(0, 0, 80, 120), 40, 40, ResampleKernel.Bicubic, false, [])));
        int plane = 40 * 40;
        // Stored green top-left quadrant rotates to the top-right when displayed.
        Assert.True(view[plane + 5 * 40 + 35] > 150, "green should be top-right after rotation");
        Assert.True(view[plane + 5 * 40 + 5] < 80, "top-left should not be green after rotation");
    }

    [Fact]
    public void Images_smaller_than_the_output_are_upscaled()
    {
        byte[] view = RenderOne(TestImages.Jpeg(50, 40), AugmentParams.Of(new ViewParams(new CropBox(0, 0, 50, 40), 224, 224, ResampleKernel.Bicubic, false, [])));
        Assert.Equal(3 * 224 * 224, view.Length);
    }

    [Theory]
    [InlineData("empty", "empty file")]
    [InlineData("text", "not a readable image")]
    [InlineData("truncated", "truncated JPEG")]
    [InlineData("bomb", "decompression bomb")]
    public void Bad_inputs_are_refused_from_the_header_with_a_reason(string kind, string reason)
    {
        byte[] jpeg = TestImages.Jpeg(400, 300);
        byte[] bytes = kind switch
        {
            "empty" => [],
            "text" => "this is not a JPEG"u8.ToArray(),
            "truncated" => jpeg[..(jpeg.Length / 2)],
            _ => jpeg,
        };
        var limits = kind == "bomb" ? new DecodeLimits(MaxPixels: 100_000) : DecodeLimits.Default;
        var error = Assert.Throws<BadImageException>(() => ImageHeader.Read(bytes, limits));
        Assert.Contains(reason, error.Reason);
    }
}
