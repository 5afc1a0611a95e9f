using System.Security.Cryptography;
using MimFlow.Data.Checks;
using MimFlow.Data.Sources.Layouts;
using MimFlow.Datasets.Synthetic;
using NetVips;

namespace MimFlow.Tests.Datasets;

public sealed class SyntheticDatasetTests
{
    private static SynthesisOptions Small(SyntheticKind kind, string output, ulong seed = 7) => new()
    {
        Kind = kind, OutputDirectory = output, Images = kind == SyntheticKind.ImageNet ? 24 : 10,
        Classes = kind == SyntheticKind.ImageNet ? 4 : null, Seed = seed, MinSide = 64, MaxSide = 160,
    };

    private static Dictionary<string, string> Digests(string root) =>
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(root, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    [Theory]
    [InlineData(SyntheticKind.ImageNet)]
    [InlineData(SyntheticKind.Ade20k)]
    public async Task Same_seed_gives_byte_identical_files_and_another_seed_does_not(SyntheticKind kind)
    {
        using var a = new TemporaryDirectory();
        using var b = new TemporaryDirectory();
        using var c = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(Small(kind, a.Path));
        await SyntheticDatasets.WriteAsync(Small(kind, b.Path));
        await SyntheticDatasets.WriteAsync(Small(kind, c.Path, seed: 8));

        var first = Digests(a.Path);
        Assert.Equal(first, Digests(b.Path));
        var other = Digests(c.Path);
        Assert.Equal(first.Keys.Order(), other.Keys.Order());
        Assert.True(first.Count(kv => kv.Key != SyntheticDatasets.ManifestFileName && other[kv.Key] == kv.Value) == 0,
            "a different seed must change every image");
    }

    [Fact]
    public async Task ImageNet_layout_has_class_folders_sorted_by_index_with_jpeg_files_in_the_size_range()
    {
        using var dir = new TemporaryDirectory();
        var result = await SyntheticDatasets.WriteAsync(Small(SyntheticKind.ImageNet, dir.Path) with { Images = 40, Classes = 5 });

        Assert.Equal(40, result.TrainImages + result.ValidationImages);
        Assert.Equal(8, result.ValidationImages);
        Assert.Equal(result.Classes.Order(StringComparer.Ordinal), result.Classes);
        foreach (bool training in new[] { true, false })
        {
            string split = ImageNetLayout.SplitFolder(dir.Path, training);
            Assert.Equal(result.Classes, Directory.GetDirectories(split).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            foreach (string file in Directory.EnumerateFiles(split, "*", SearchOption.AllDirectories))
            {
                Assert.EndsWith(ImageNetLayout.ImageExtension, file);
                using var image = Image.NewFromFile(file);
                Assert.Equal("jpegload", (string)image.Get("vips-loader"));
                Assert.Equal(3, image.Bands);
                Assert.InRange(image.Width, 64, 160);
                Assert.InRange(image.Height, 64, 160);
            }
        }
        Assert.Equal(32, Directory.EnumerateFiles(ImageNetLayout.SplitFolder(dir.Path, true), "*", SearchOption.AllDirectories).Count());
    }

    [Fact]
    public async Task Every_file_decodes_and_label_maps_hold_only_0_to_150_matching_their_images()
    {
        using var dir = new TemporaryDirectory();
        var result = await SyntheticDatasets.WriteAsync(Small(SyntheticKind.Ade20k, dir.Path) with { Images = 12 });

        var check = DecodeCheck.Run(dir.Path);
        Assert.Empty(check.Failures);
        Assert.Equal(12, check.Images);
        Assert.Equal(12, check.LabelMaps);
        Assert.InRange(check.MaxLabel, 1, 150);

        foreach (bool training in new[] { true, false })
        {
            var images = Directory.GetFiles(Ade20kLayout.ImagesFolder(dir.Path, training)).Select(Path.GetFileNameWithoutExtension).Order();
            var annotations = Directory.GetFiles(Ade20kLayout.AnnotationsFolder(dir.Path, training)).Select(Path.GetFileNameWithoutExtension).Order();
            Assert.Equal(images, annotations);
            foreach (string? name in images)
            {
                using var image = Image.NewFromFile(Path.Combine(Ade20kLayout.ImagesFolder(dir.Path, training), name + ".jpg"));
                using var labels = Image.NewFromFile(Path.Combine(Ade20kLayout.AnnotationsFolder(dir.Path, training), name + ".png"));
                Assert.Equal((image.Width, image.Height), (labels.Width, labels.Height));
                Assert.True(labels.Max() <= 150);
            }
        }
        Assert.Equal((10, 2), (result.TrainImages, result.ValidationImages));
    }

    [Fact]
    public async Task Label_regions_follow_the_image_content()
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(Small(SyntheticKind.Ade20k, dir.Path) with { Images = 6, MinSide = 128, MaxSide = 128 });
        // Within one label region colours vary only by texture and noise; across the whole image they vary by region.
        // So the pixel variance explained by the label map must be a large share of the total.
        double explainedShares = 0;
        int scenes = 0;
        foreach (string annotation in Directory.EnumerateFiles(Path.Combine(dir.Path, Ade20kLayout.RootFolder, "annotations"), "*.png", SearchOption.AllDirectories))
        {
            string imagePath = annotation.Replace("annotations", "images").Replace(".png", ".jpg");
            using var image = Image.NewFromFile(imagePath);
            using var labels = Image.NewFromFile(annotation);
            byte[] rgb = image.WriteToMemory<byte>();
            byte[] label = labels.WriteToMemory<byte>();
            var byLabel = new Dictionary<byte, (double Sum, double SumSquares, int Count)>();
            double total = 0, totalSquares = 0;
            for (int i = 0; i < label.Length; i++)
            {
                double luma = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
                var s = byLabel.GetValueOrDefault(label[i]);
                byLabel[label[i]] = (s.Sum + luma, s.SumSquares + luma * luma, s.Count + 1);
                total += luma;
                totalSquares += luma * luma;
            }
            double totalVariance = totalSquares / label.Length - Math.Pow(total / label.Length, 2);
            double within = byLabel.Values.Sum(s => s.SumSquares - s.Sum * s.Sum / s.Count) / label.Length;
            Assert.True(byLabel.Count >= 2, $"{annotation} has a single label");
            explainedShares += 1 - within / totalVariance;
            scenes++;
        }
        Assert.True(explainedShares / scenes > 0.3, $"labels explain only {explainedShares / scenes:P0} of the pixel variance");
    }

    [Fact]
    public async Task A_non_empty_folder_is_refused_unless_forced_and_force_replaces_only_what_a_generation_wrote()
    {
        using var dir = new TemporaryDirectory();
        string notes = dir.Combine("notes.txt");
        File.WriteAllText(notes, "mine");
        var options = Small(SyntheticKind.ImageNet, dir.Path);

        var refused = await Assert.ThrowsAsync<OutputFolderNotEmptyException>(() => SyntheticDatasets.WriteAsync(options));
        Assert.Contains(dir.Path, refused.Message);
        Assert.False(Directory.Exists(dir.Combine("train")));

        var first = await SyntheticDatasets.WriteAsync(options with { Force = true });
        // The user's own files among and beside the generated ones: a photo in a class folder, a note, a class of their own.
        string photo = dir.Combine("train", "n00000001", "my_photo.JPEG"), readme = dir.Combine("train", "readme.txt"), own = dir.Combine("train", "n99999999", "x.JPEG");
        Directory.CreateDirectory(Path.GetDirectoryName(own)!);
        foreach (string path in new[] { photo, readme, own }) File.WriteAllBytes(path, [1, 2, 3]);
        string generated = Directory.EnumerateFiles(dir.Combine("train", "n00000001")).Order(StringComparer.Ordinal).First(f => !f.EndsWith("my_photo.JPEG", StringComparison.Ordinal));
        File.WriteAllBytes(generated, [9]);

        var second = await SyntheticDatasets.WriteAsync(options with { Force = true, Seed = 1 });
        foreach (string path in new[] { photo, readme, own }) Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
        Assert.Equal("mine", File.ReadAllText(notes));
        Assert.Equal(first.TrainImages + first.ValidationImages, second.TrainImages + second.ValidationImages);
        Assert.NotEqual([9], File.ReadAllBytes(generated));

        // Without the record of what was generated, nothing is known to be the generation's: a collision is refused, nothing removed.
        File.Delete(dir.Combine(SyntheticDatasets.ManifestFileName));
        var collision = await Assert.ThrowsAsync<IOException>(() => SyntheticDatasets.WriteAsync(options with { Force = true }));
        Assert.Contains("no earlier generation wrote", collision.Message);
        Assert.True(File.Exists(generated) && File.Exists(photo));
    }

    [Theory]
    [InlineData(0, 10, 200, 800, "--images")]
    [InlineData(10, 0, 200, 800, "--classes")]
    [InlineData(10, 10, 300, 200, "min-side")]
    public void Options_out_of_range_are_rejected_by_name(int images, int classes, int minSide, int maxSide, string named)
    {
        var options = new SynthesisOptions { Kind = SyntheticKind.ImageNet, OutputDirectory = "x", Images = images, Classes = classes, MinSide = minSide, MaxSide = maxSide };
        Assert.Contains(named, Assert.Throws<ArgumentException>(options.Validate).Message);
        Assert.Contains("--classes", Assert.Throws<ArgumentException>(
            (options with { Kind = SyntheticKind.Ade20k, Images = 1, Classes = 151, MinSide = 200, MaxSide = 800 }).Validate).Message);
    }
}
