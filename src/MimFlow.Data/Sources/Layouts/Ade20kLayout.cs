namespace MimFlow.Data.Sources.Layouts;

/// <summary>
/// The ADE20K SceneParsing layout (ADEChallengeData2016): <c>images/{training,validation}/*.jpg</c> and
/// <c>annotations/{training,validation}/*.png</c>, paired by file name. Annotations are 8-bit label maps:
/// 0 is "other" (ignored in evaluation), 1..150 the classes of <see cref="ClassNames"/>.
/// </summary>
public static class Ade20kLayout
{
    public const string RootFolder = "ADEChallengeData2016";
    public const string ImageExtension = ".jpg";
    public const string AnnotationExtension = ".png";
    public const int ClassCount = 150;

    public static string ImagesFolder(string root, bool training) =>
        Path.Combine(root, RootFolder, "images", training ? "training" : "validation");

    public static string AnnotationsFolder(string root, bool training) =>
        Path.Combine(root, RootFolder, "annotations", training ? "training" : "validation");

    public static string ImageName(bool training, int number) => $"ADE_{(training ? "train" : "val")}_{number:D8}";

    /// <summary>Class names of the 150-class benchmark, index 0 = label 1 (objectInfo150).</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
    [
        "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
        "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
        "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
        "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
        "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
        "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
        "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
        "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
        "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
        "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
        "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
        "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
        "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
        "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
        "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
    ];
}
