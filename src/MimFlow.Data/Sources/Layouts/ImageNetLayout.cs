namespace MimFlow.Data.Sources.Layouts;

/// <summary>
/// The ImageNet-1k folder layout: <c>train/&lt;wnid&gt;/*.JPEG</c> and <c>val/&lt;wnid&gt;/*.JPEG</c>; the class
/// index of a wnid is its position in the ordinal sort of the wnids (as torchvision's ImageFolder does).
/// </summary>
public static class ImageNetLayout
{
    public const string TrainFolder = "train";
    public const string ValidationFolder = "val";
    public const string ImageExtension = ".JPEG";

    public static string SplitFolder(string root, bool training) => Path.Combine(root, training ? TrainFolder : ValidationFolder);

    public static string ClassFolder(string root, bool training, string wnid) => Path.Combine(SplitFolder(root, training), wnid);
}
