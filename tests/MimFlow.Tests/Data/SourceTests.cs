using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Data;

public sealed class SourceTests
{
    [Fact]
    public void Imagenet_listing_is_sorted_with_class_index_from_sorted_wnids_and_non_ascii_names()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        foreach (string path in new[] { "train/n02/b.JPEG", "train/n02/a.JPEG", "train/n01/zebra.JPEG", "train/n01/été.JPEG", "train/n01/éa.JPEG",
                     "train/n01/\U0001F600.JPEG", "train/n01/\uFF21.JPEG", "train/n01/notes.txt", "val/n02/v.JPEG" })
            TestImages.Write(dir.Combine(path.Split('/')), jpeg);

        var train = DatasetSource.Open(dir.Path, DatasetLayout.ImageNet);
        Assert.Equal(["n01", "n02"], train.Classes);
        Assert.Equal(
            ["train/n01/zebra.JPEG", "train/n01/éa.JPEG", "train/n01/été.JPEG", "train/n01/\uFF21.JPEG", "train/n01/\U0001F600.JPEG", "train/n02/a.JPEG", "train/n02/b.JPEG"],
            train.All().Select(s => s.RelativePath));
        Assert.Equal([0, 0, 0, 0, 0, 1, 1], train.All().Select(s => s.Label));

        var val = DatasetSource.Open(dir.Path, DatasetLayout.ImageNet, DatasetSplit.Validation);
        var only = Assert.Single(val.All());
        Assert.Equal(("val/n02/v.JPEG", 1), (only.RelativePath, only.Label));
    }

    [Fact]
    public void Code_point_order_puts_astral_characters_after_the_private_use_area_unlike_utf16_ordinal()
    {
        string astral = "\U0001F600", high = "\uFF21";
        Assert.True(CodePointComparer.Instance.Compare(high, astral) < 0);
        Assert.True(string.CompareOrdinal(high, astral) > 0);
    }

    [Fact]
    public void Flat_validation_folder_uses_the_ground_truth_file_by_index_or_wnid()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        TestImages.Write(dir.Combine("train", "n01", "a.JPEG"), jpeg);
        TestImages.Write(dir.Combine("train", "n02", "b.JPEG"), jpeg);
        TestImages.Write(dir.Combine("val", "ILSVRC2012_val_00000001.JPEG"), jpeg);
        TestImages.Write(dir.Combine("val", "ILSVRC2012_val_00000002.JPEG"), jpeg);
        File.WriteAllText(dir.Combine("gt.txt"), "ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000002 n01\n");

        var val = DatasetSource.Open(dir.Path, DatasetLayout.ImageNet, DatasetSplit.Validation, dir.Combine("gt.txt"));
        Assert.Equal([1, 0], val.All().Select(s => s.Label));
        var missing = Assert.Throws<InvalidDataException>(() => DatasetSource.Open(dir.Path, DatasetLayout.ImageNet, DatasetSplit.Validation));
        Assert.Contains("ground-truth", missing.Message);
    }

    [Fact]
    public async Task Ade20k_listing_pairs_images_with_annotations_by_name()
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.Ade20k, OutputDirectory = dir.Path, Images = 5, MinSide = 48, MaxSide = 64 });
        var index = DatasetSource.Open(dir.Path, DatasetLayout.Ade20k);
        Assert.Equal(4, index.Count);
        Assert.Equal(150, index.Classes.Count);
        foreach (var sample in index.All())
        {
            Assert.Equal(-1, sample.Label);
            Assert.True(File.Exists(Path.Combine(dir.Path, sample.AnnotationRelativePath!)), sample.AnnotationRelativePath);
            Assert.Equal(Path.GetFileNameWithoutExtension(sample.RelativePath), Path.GetFileNameWithoutExtension(sample.AnnotationRelativePath));
        }
    }

    [Fact]
    public void Folder_layout_finds_images_at_any_depth_and_a_missing_root_is_named()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        TestImages.Write(dir.Combine("b", "deep", "x.png"), jpeg);
        TestImages.Write(dir.Combine("a.jpg"), jpeg);
        TestImages.Write(dir.Combine("b", "y.jpeg"), jpeg);
        var index = DatasetSource.Open(dir.Path, DatasetLayout.Folder);
        Assert.Equal(["a.jpg", "b/y.jpeg", "b/deep/x.png"], index.All().Select(s => s.RelativePath));
        var error = Assert.Throws<DirectoryNotFoundException>(() => DatasetSource.Open(dir.Combine("nope"), DatasetLayout.Folder));
        Assert.Contains(dir.Combine("nope"), error.Message);
    }
}
