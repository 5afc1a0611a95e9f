using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using MimFlow.Tests.Data;
using NetVips;
using Xunit.Abstractions;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged JPEGs and PNGs through the decoder path scan and the loader use (header check, region decode with
/// shrink-on-load and orientation, resample into the pretraining views) and through the ADE20K label-map check:
/// every case renders views of the right size or is refused with a BadImageException and a reason; a scan over all
/// of them accounts for every file, quarantining the refused ones by path.
/// </summary>
public sealed class ImageFuzzTests(ITestOutputHelper output)
{
    private static readonly (string Name, Func<byte[]> Make)[] Sources =
    [
        ("rgb.jpg", () => TestImages.Jpeg(48, 40)),
        ("grey.jpg", () => TestImages.GreyJpeg(40, 32)),
        ("cmyk.jpg", () => TestImages.CmykJpeg(32, 40)),
        ("rotated.jpg", () => TestImages.OrientedJpeg(40, 24, 6)),
        ("rgb.png", () => TestImages.Rgb(40, 32).PngsaveBuffer()),
        ("deep.png", () => TestImages.Png16(24, 40)),
        ("alpha.png", () => TestImages.AlphaPng(32, 32)),
    ];

    /// <summary>What the loader does with one encoded image (DataflowLoader.Render): header, drawn views, render.</summary>
    private static void Render(byte[] encoded, int index)
    {
        var header = ImageHeader.Read(encoded, DecodeLimits.Default);
        var recipe = new PretrainRecipe(Size: 32, SecondViewSize: 16);
        var random = StableRandom.For(3, (ulong)index);
        var parameters = recipe.Draw(header, ref random);
        var outputs = recipe.Views.Select(v => new byte[v.Bytes]).ToArray();
        Augmenter.Render(encoded, header, parameters, recipe.Views, outputs.Select(o => new Memory<byte>(o)).ToArray());
    }

    [Fact]
    public async Task Damaged_images_render_or_are_refused_with_a_reason_and_a_scan_quarantines_them_by_path()
    {
        LibvipsSettings.ForGraphParallelism();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun("images", output);
        string data = dir.Combine("data", "all");
        Directory.CreateDirectory(data);
        int index = 0, seed = 11;
        foreach (var (name, make) in Sources)
        {
            byte[] original = make();
            foreach (var fuzz in Mutations.Of(original, seed++, 50).Prepend(new FuzzCase("intact", original)))
            {
                int sample = index++;
                File.WriteAllBytes(Path.Combine(data, $"{sample:D4}-{Path.GetFileNameWithoutExtension(name)}{Path.GetExtension(name)}"), fuzz.Bytes);
                run.Case($"{name} {fuzz.Label}", () => Render(fuzz.Bytes, sample), [], typeof(BadImageException));
            }
        }

        // ADE20K label maps: one 8-bit band, the image's size, labels up to 150.
        using (var labels = (Image.Black(40, 32) + 7).Cast(Enums.BandFormat.Uchar))
        {
            byte[] original = labels.PngsaveBuffer();
            var imageHeader = ImageHeader.Read(TestImages.Jpeg(40, 32), DecodeLimits.Default);
            foreach (var fuzz in Mutations.Of(original, 77, 30))
                run.Case($"label map {fuzz.Label}", () => AnnotationCheck.Decode(fuzz.Bytes, imageHeader), [], typeof(BadImageException));
        }

        var index2 = DatasetSource.Open(dir.Combine("data"), DatasetLayout.Folder);
        var report = await DatasetScan.RunAsync(index2, dir.Combine("scan"), DatasetSplit.Train, new LoaderOptions { DecodeWorkers = 2, BatchSize = 16 });
        var quarantined = File.Exists(dir.Combine("scan", "quarantine.jsonl"))
            ? File.ReadAllLines(dir.Combine("scan", "quarantine.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList()
            : [];
        if (report.Ok + report.Quarantined != index) run.Fail("scan", $"{report.Ok} ok + {report.Quarantined} quarantined of {index} files");
        foreach (var line in quarantined)
        {
            string path = line.GetProperty("path").GetString() ?? "";
            if (!File.Exists(Path.Combine(dir.Combine("data"), path)) || string.IsNullOrWhiteSpace(line.GetProperty("reason").GetString()))
                run.Fail("scan", $"a quarantine line without a file or a reason: {line}");
        }
        output.WriteLine($"scan: {report.Ok} ok, {report.Quarantined} quarantined of {index}");
        run.Finish();
    }
}

/// <summary>Header refusals beyond the pixel count: what an image decodes to, and how many bands it has.</summary>
public sealed class DecodeLimitTests
{
    [Fact]
    public void An_image_that_decodes_past_the_byte_limit_is_refused_from_its_header()
    {
        byte[] jpeg = TestImages.Jpeg(1000, 800);
        var error = Assert.Throws<BadImageException>(() => ImageHeader.Read(jpeg, new DecodeLimits(MaxDecodedBytes: 1_000_000)));
        Assert.Contains("2,400,000 bytes", error.Reason);
        Assert.Equal(1000, ImageHeader.Read(jpeg, DecodeLimits.Default).Width);
        using var wide = Image.Black(64, 64, bands: 20);
        Assert.Contains("20 bands", Assert.Throws<BadImageException>(() => ImageHeader.Read(wide.TiffsaveBuffer(), DecodeLimits.Default)).Reason);
        Assert.Throws<ArgumentOutOfRangeException>(() => new DecodeLimits(MaxPixels: 0));
    }
}
