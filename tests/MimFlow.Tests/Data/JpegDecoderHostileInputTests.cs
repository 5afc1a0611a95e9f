using System.Text.Json;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using NetVips;

namespace MimFlow.Tests.Data;

/// <summary>
/// Hostile JPEGs the managed decoder once got wrong, each checked against what libvips (libjpeg-turbo) does with the
/// same bytes, and the loader's quarantine of damaged JPEGs by file name.
/// </summary>
public sealed class JpegDecoderHostileInputTests
{
    private static byte[] Uniform(int width, int height, byte value)
    {
        byte[] rgb = new byte[3 * width * height];
        Array.Fill(rgb, value);
        return rgb;
    }

    /// <summary>libvips' full decode (3 bands), or its error.</summary>
    private static byte[] LibvipsPixels(byte[] jpeg)
    {
        using var image = Image.JpegloadBuffer(jpeg, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
        Assert.Equal(3, image.Bands);
        return image.WriteToMemory<byte>();
    }

    private static byte[] Interleaved(byte[] planar, int pixels)
    {
        byte[] rgb = new byte[3 * pixels];
        for (int i = 0; i < pixels; i++)
            for (int c = 0; c < 3; c++) rgb[3 * i + c] = planar[c * pixels + i];
        return rgb;
    }

    /// <summary>The managed decoder either leaves the file to libvips or gives exactly libvips' pixels.</summary>
    private static bool DecodesAsLibvips(byte[] jpeg, int width, int height)
    {
        byte[] planar = new byte[3 * width * height];
        if (!new JpegRegionDecoder().TryDecode(jpeg, 0, 0, width, height, planar)) return false;
        Assert.Equal(LibvipsPixels(jpeg), Interleaved(planar, width * height));
        return true;
    }

    [Fact]
    public void An_app0_too_short_for_jfif_does_not_make_rgb_component_ids_ycbcr()
    {
        // libjpeg takes an APP0 as JFIF only when it holds at least 14 bytes; without JFIF, component ids 'R', 'G', 'B'
        // mean RGB, which the managed decoder does not take. It used to see "JFIF\0" alone and convert from YCbCr.
        byte[] rgb = JpegDecoderFuzzTests.Noise(32, 16, 2);
        byte[] jpeg = JpegWriter.Encode(rgb, 32, 16, new JpegLayout(ComponentIds: "RGB"u8.ToArray(), App0: "JFIF\0"u8.ToArray()));
        Assert.False(DecodesAsLibvips(jpeg, 32, 16));
        // The same file with a whole JFIF segment is YCbCr for libjpeg too, and decoded here.
        byte[] jfif = JpegWriter.Encode(rgb, 32, 16, new JpegLayout(ComponentIds: "RGB"u8.ToArray(), App0: JpegLayout.Jfif));
        Assert.True(DecodesAsLibvips(jfif, 32, 16));
    }

    [Fact]
    public void Sizes_past_libjpegs_65500_pixel_limit_are_refused_as_libjpeg_refuses_them()
    {
        // A complete 65501 × 8 JPEG: libjpeg refuses any side above 65500 ("Maximum supported image dimension"). The
        // managed header reader used to accept it, so libvips never saw the file and the decoder rendered it.
        byte[] jpeg = JpegWriter.Encode(Uniform(65501, 8, 90), 65501, 8, new JpegLayout(App0: JpegLayout.Jfif));
        var decoder = new JpegRegionDecoder();
        Assert.False(decoder.TryReadHeader(jpeg, out _, out _, out _));
        Assert.False(decoder.TryDecode(jpeg, 0, 0, 64, 8, new byte[3 * 64 * 8]));
        var error = Assert.Throws<BadImageException>(() => ImageHeader.Read(jpeg, DecodeLimits.Default));
        Assert.Contains("65500", error.Reason);
        // 65500 itself is libjpeg's largest: read and decoded.
        byte[] widest = JpegWriter.Encode(Uniform(65500, 8, 90), 65500, 8, new JpegLayout(App0: JpegLayout.Jfif));
        Assert.Equal(65500, ImageHeader.Read(widest, DecodeLimits.Default).Width);
        Assert.True(decoder.TryDecode(widest, 65000, 0, 500, 8, new byte[3 * 500 * 8]));
    }

    [Theory]
    [InlineData(0xF0)] // JPG0
    [InlineData(0xDE)] // DHP
    [InlineData(0x4F)] // reserved
    public void Markers_libjpeg_does_not_accept_before_the_scan_are_left_to_libvips(int marker)
    {
        // libjpeg stops with "Unsupported marker type" at DHP, EXP, JPGn and reserved markers; the managed header
        // reader skipped every segment it did not know, so such a file was read and decoded without libvips.
        byte[] good = JpegWriter.Encode(JpegDecoderFuzzTests.Noise(24, 16, 4), 24, 16, new JpegLayout(App0: JpegLayout.Jfif));
        int dqt = JpegWriter.Segments(good).First(s => s.Marker == 0xDB).Offset;
        byte[] jpeg = [.. good[..dqt], 0xFF, (byte)marker, 0, 4, 1, 2, .. good[dqt..]];
        var decoder = new JpegRegionDecoder();
        Assert.False(decoder.TryReadHeader(jpeg, out _, out _, out _));
        Assert.False(decoder.TryDecode(jpeg, 0, 0, 24, 16, new byte[3 * 24 * 16]));
        Assert.Contains($"FF{marker:X2}", decoder.LastRefusal);
        var error = Assert.Throws<BadImageException>(() => ImageHeader.Read(jpeg, DecodeLimits.Default));
        Assert.Contains("marker", error.Reason);
        // APPn and COM segments are skipped, as libjpeg skips them.
        byte[] comment = [.. good[..dqt], 0xFF, 0xFE, 0, 4, 1, 2, .. good[dqt..]];
        Assert.True(DecodesAsLibvips(comment, 24, 16));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(9)]
    [InlineData(100)]
    [InlineData(65535)]
    public void Exif_orientations_outside_1_to_8_read_as_1_as_libvips_reads_them(int orientation)
    {
        // The managed header reader clamped 9..65535 to 8 (transpose and rotate), where libvips reads 1 (as stored).
        byte[] jpeg = TestImages.OrientedJpeg(40, 24, orientation);
        var header = ImageHeader.Read(jpeg, DecodeLimits.Default);
        Assert.Equal(1, header.Orientation);
        Assert.Equal((40, 24), (header.Width, header.Height));
        Assert.True(new JpegRegionDecoder().TryReadHeader(jpeg, out _, out _, out int read));
        Assert.Equal(1, read);
    }

    [Theory]
    [InlineData(0, 0, 2000, "a DC-only block of DC 2000 (dequantised past 8191: libjpeg-turbo's shortcut shifts it in 16 bits)")]
    [InlineData(0, 1, 1000, "an AC coefficient of 1000 (dequantised past 16 bits)")]
    [InlineData(1, 5, -1023, "a chroma AC coefficient of -1023")]
    [InlineData(0, 9, 700, "a mid-frequency coefficient of 700 (pass 1 past 16 bits)")]
    public void Coefficients_past_libjpeg_turbos_16_bit_lanes_are_left_to_libvips(int component, int zigzag, int value, string what)
    {
        // libjpeg-turbo's SIMD IDCT (what libvips runs) works in 16-bit lanes: products wrap and each pass saturates.
        // A real encoder never gets there; damaged entropy data does, and the managed 32-bit IDCT then gave different
        // pixels. Such blocks are now left to libvips, so the pixels are libjpeg-turbo's whatever the data.
        byte[] rgb = JpegDecoderFuzzTests.Noise(24, 16, 3);
        byte[] jpeg = JpegWriter.Encode(rgb, 24, 16, new JpegLayout(Quality: 10, App0: JpegLayout.Jfif, Tamper: (c, block, coefficients) =>
        {
            if (c != component || block != 0) return;
            if (zigzag == 0) Array.Clear(coefficients);
            coefficients[zigzag] = value;
        }));
        Assert.False(DecodesAsLibvips(jpeg, 24, 16), what);
        // The same image untampered is the managed decoder's.
        Assert.True(DecodesAsLibvips(JpegWriter.Encode(rgb, 24, 16, new JpegLayout(Quality: 10, App0: JpegLayout.Jfif)), 24, 16));
    }

    [Fact]
    public void A_small_file_claiming_a_large_image_is_refused_before_the_planes_are_allocated()
    {
        // 9000 × 9000 (81 MP, within the default pixel limit) claimed by a file of a few hundred bytes: every block
        // takes at least two bits, so the data cannot cover it. The decoder used to allocate its planes for the
        // region (about 120 MB here) before running out of data.
        byte[] small = JpegWriter.Encode(Uniform(16, 16, 90), 16, 16, new JpegLayout(App0: JpegLayout.Jfif));
        var sof = JpegWriter.Segments(small).Single(s => s.Marker == 0xC0);
        small[sof.Offset + 5] = 9000 >> 8;
        small[sof.Offset + 6] = 9000 & 0xFF;
        small[sof.Offset + 7] = 9000 >> 8;
        small[sof.Offset + 8] = 9000 & 0xFF;
        var decoder = new JpegRegionDecoder();
        Assert.True(decoder.TryReadHeader(small, out int width, out int height, out _));
        Assert.Equal((9000, 9000), (width, height));
        byte[] target = new byte[3 * 4000 * 4000];
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.False(decoder.TryDecode(small, 100, 100, 4000, 4000, target));
        Assert.False(decoder.TryLumaMean(small, out _));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1 << 20, $"allocated {allocated:N0} bytes for a {small.Length}-byte file");
    }

    [Fact]
    public void Regions_whose_bounds_overflow_are_refused()
    {
        byte[] jpeg = JpegWriter.Encode(JpegDecoderFuzzTests.Noise(40, 24, 1), 40, 24, new JpegLayout(2, 2, App0: JpegLayout.Jfif));
        var decoder = new JpegRegionDecoder();
        byte[] target = new byte[3 * 16 * 16];
        Assert.False(decoder.TryDecode(jpeg, int.MaxValue - 4, 0, 16, 8, target));
        Assert.False(decoder.TryDecode(jpeg, 0, int.MaxValue - 4, 8, 16, target));
        Assert.False(decoder.TryDecode(jpeg, 30, 0, 16, 8, target));
        Assert.False(decoder.TryDecode(jpeg, 0, 0, 40, 24, target)); // target too small
        Assert.True(decoder.TryDecode(jpeg, 24, 8, 16, 16, target));
    }

    [Fact]
    public void Every_refusal_of_the_managed_decoder_says_why()
    {
        byte[] good = JpegWriter.Encode(JpegDecoderFuzzTests.Noise(40, 24, 1), 40, 24, new JpegLayout(2, 1, RestartInterval: 2, App0: JpegLayout.Jfif));
        var decoder = new JpegRegionDecoder();
        byte[] target = new byte[3 * 40 * 24];
        Assert.True(decoder.TryDecode(good, 0, 0, 40, 24, target));
        Assert.Null(decoder.LastRefusal);

        var sos = JpegWriter.Segments(good).Single(s => s.Marker == 0xDA);
        byte[] undefinedTable = (byte[])good.Clone();
        undefinedTable[sos.Offset + 4 + 2] = 0x33; // luma: DC table 3, AC table 3
        Assert.False(decoder.TryDecode(undefinedTable, 0, 0, 40, 24, target));
        Assert.Equal("JPEG: DC Huffman table 3 referenced by the scan is not defined", decoder.LastRefusal);

        byte[] noRestart = (byte[])good.Clone();
        int restart = Array.FindIndex(noRestart, sos.Offset + 2 + sos.Length, b => b == 0xFF);
        while (noRestart[restart + 1] is < 0xD0 or > 0xD7) restart = Array.IndexOf(noRestart, (byte)0xFF, restart + 1);
        noRestart[restart + 1] = 0xD5;
        Assert.False(decoder.TryDecode(noRestart, 0, 0, 40, 24, target));
        Assert.StartsWith("JPEG: restart marker", decoder.LastRefusal);

        Assert.False(decoder.TryDecode(TestImages.GreyJpeg(40, 24), 0, 0, 40, 24, target));
        Assert.Equal("JPEG: 1 component (only 3-component YCbCr is decoded here)", decoder.LastRefusal);
    }

    [Fact]
    public async Task A_scan_quarantines_damaged_jpegs_by_file_name_and_keeps_the_good_ones()
    {
        using var dir = new TemporaryDirectory();
        byte[] good = JpegWriter.Encode(JpegDecoderFuzzTests.Noise(120, 90, 1), 120, 90, new JpegLayout(2, 1, RestartInterval: 4, App0: JpegLayout.Jfif));
        var sof = JpegWriter.Segments(good).Single(s => s.Marker == 0xC0);
        var dht = JpegWriter.Segments(good).First(s => s.Marker == 0xC4);
        var sos = JpegWriter.Segments(good).Single(s => s.Marker == 0xDA);
        byte[] Damaged(Action<byte[]> damage)
        {
            byte[] bytes = (byte[])good.Clone();
            damage(bytes);
            return bytes;
        }
        var files = new Dictionary<string, byte[]>
        {
            ["good-422.jpg"] = good,
            ["good-420.jpg"] = TestImages.Jpeg(100, 80),
            ["good-grey.jpg"] = TestImages.GreyJpeg(64, 48),
            ["sub/good-440.jpg"] = JpegWriter.Encode(JpegDecoderFuzzTests.Noise(60, 70, 2), 60, 70, new JpegLayout(1, 2, App0: JpegLayout.Jfif)),
            ["truncated.jpg"] = good[..(good.Length * 2 / 3)],
            // The luma DC table's counts 0, 1, 5, … become 3, 1, 2, …: three codes of one bit, as many symbols as before.
            ["huffman-oversubscribed.jpg"] = Damaged(b => (b[dht.Offset + 5], b[dht.Offset + 7]) = (3, 2)),
            ["sampling-zero.jpg"] = Damaged(b => b[sof.Offset + 11] = 0x00),
            ["too-wide.jpg"] = JpegWriter.Encode(Uniform(65535, 8, 90), 65535, 8, new JpegLayout(App0: JpegLayout.Jfif)),
            ["scan-table-undefined.jpg"] = Damaged(b => b[sos.Offset + 6] = 0x33),
            ["sub/no-frame.jpg"] = [.. good[..sof.Offset], .. good[(sof.Offset + 2 + sof.Length)..]],
        };
        foreach (var (name, bytes) in files) TestImages.Write(dir.Combine("data", name), bytes);
        var index = DatasetSource.Open(dir.Combine("data"), DatasetLayout.Folder);

        var report = await DatasetScan.RunAsync(index, dir.Combine("out"), DatasetSplit.Train, new LoaderOptions { DecodeWorkers = 2, BatchSize = 3, ReadRetries = 1 });

        var lines = TestImages.QuarantineReasons(dir.Combine("out"));
        Assert.Equal(files.Keys.Where(k => !k.Contains("good")).Order(), lines.Keys.Order());
        Assert.Equal(4, report.Ok);
        Assert.Contains("truncated JPEG", lines["truncated.jpg"]);
        // libvips keeps one error buffer per process, so with two workers its text may be the other file's; the managed
        // decoder's finding beside it is this file's own.
        Assert.Contains("(JPEG: ", lines["huffman-oversubscribed.jpg"]);
        Assert.Contains("Huffman", lines["huffman-oversubscribed.jpg"]);
        Assert.Contains("(JPEG: ", lines["scan-table-undefined.jpg"]);
        Assert.Contains("65500", lines["too-wide.jpg"]);
        Assert.Contains("table", lines["scan-table-undefined.jpg"]);
        Assert.All(lines.Values, reason => Assert.False(string.IsNullOrWhiteSpace(reason)));
        Assert.All(lines.Values, reason => Assert.DoesNotContain("Exception", reason));
    }
}
