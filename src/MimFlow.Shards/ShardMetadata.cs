using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MimFlow.Shards;

/// <summary>
/// The class names a set's rows refer to. <see cref="Column"/> says which column indexes them: <c>label</c>
/// (classification: label i is <c>Names[i]</c>) or <c>label_map</c> (ADE20K scene parsing: pixel value v ≥ 1 is
/// <c>Names[v − 1]</c>, 0 is "other").
/// </summary>
public sealed record ShardClasses(string Column, IReadOnlyList<string> Names)
{
    public const string LabelColumn = "label";
    public const string LabelMapColumn = "label_map";

    /// <summary>The classes of a dataset listing: none when it names none.</summary>
    public static ShardClasses? Of(IReadOnlyList<string> names, bool segmentation) =>
        names.Count == 0 ? null : new ShardClasses(segmentation ? LabelMapColumn : LabelColumn, names.ToList());
}

/// <summary>What a shard set's columns hold beyond their Parquet types: everything the self-description (the
/// <c>huggingface</c> key-value metadata of every shard, the dataset card) is made from.</summary>
public sealed record ShardDescription(
    TokenizeConfiguration Configuration, ShardColumns Columns, ShardClasses? Classes, int CodeLength, int CodebookSize, int[]? FeatureShape);

/// <summary>
/// The features of a shard set as Hugging Face <c>datasets</c> reads them from the Parquet key-value metadata
/// (<c>huggingface</c> → <c>{"info": {"features": …}}</c>) and from a dataset card's <c>dataset_info</c>.
/// <para>
/// <c>datasets</c> keeps a declared feature only where its Arrow type equals the column's; otherwise it silently
/// infers one from the column. So every feature declared here is the one the column's type really gives: <c>label</c>
/// is a ClassLabel (stored int64, as ClassLabel is) only when the set has class names for it; <c>image</c> and
/// <c>label_map</c> are plain binary (JPEG / PNG bytes, not the {bytes, path} struct of <c>datasets.Image</c>), and
/// <c>features</c> are binary blobs whose shape and encoding are in the description, not an Array2D the bytes are not.
/// </para>
/// </summary>
public static class ShardMetadata
{
    public const string HuggingFaceKey = "huggingface";

    /// <summary>One column: its Parquet type in words, its <c>datasets</c> feature, and what it means.</summary>
    public sealed record Column(string Name, string Type, JsonObject Feature, string Meaning);

    public static IReadOnlyList<Column> Columns(ShardDescription description)
    {
        var configuration = description.Configuration;
        var columns = description.Columns;
        var classes = description.Classes;
        var list = new List<Column>
        {
            new("sample_id", "string", Value("string"), "16 hex digits of SHA-256 over `path` (UTF-8): the same image has the same id on every machine and listing"),
            new("path", "string", Value("string"), "the sample relative to the dataset root ('/'-separated); WebDataset `<tar>/<key>`, Hugging Face Parquet `<file>/<row>`"),
            classes is { Column: ShardClasses.LabelColumn }
                ? new("label", "int64, nullable", ClassLabel(classes.Names), $"class index into the {classes.Names.Count} class names (`label` i is name i); null when unlabelled")
                : new("label", "int64, nullable", Value("int64"), "class index; null for datasets without image labels"),
            new("view", "int32", Value("int32"), $"k in 0..{configuration.Views - 1}: the k-th of {configuration.Views} augmented view(s) of the image"),
            new("augment", "string (JSON)", Value("string"), "the view's augmentation (crop box in source pixels, output size, kernel, flip, pixel ops): replaying it on the source gives the identical pixels"),
            new("source_width", "int32", Value("int32"), "display width of the source (after EXIF orientation): the crop's frame"),
            new("source_height", "int32", Value("int32"), "display height of the source (after EXIF orientation)"),
        };
        if (columns.Codes)
            list.Add(new("codes", "list<int16>", Sequence(Value("int16")),
                $"{description.CodeLength} tokenizer codes per row{Grid(description.CodeLength)}, row-major over the patch grid, each in 0..{description.CodebookSize - 1}"));
        if (columns.Features is FeatureEncoding encoding && description.FeatureShape is [int tokens, int dim])
        {
            long bytes = (long)tokens * dim * (encoding == FeatureEncoding.Fp16 ? 2 : 1);
            list.Add(new("features", "binary", Value("binary"), encoding == FeatureEncoding.Fp16
                ? $"teacher patch features [{tokens}, {dim}], little-endian float16, row-major: {bytes.ToString("N0", CultureInfo.InvariantCulture)} bytes per row"
                : $"teacher patch features [{tokens}, {dim}], int8, row-major ({bytes.ToString("N0", CultureInfo.InvariantCulture)} bytes per row): value = int8 × the token's scale in `feature_scales`"));
            if (encoding == FeatureEncoding.Int8)
                list.Add(new("feature_scales", "binary", Value("binary"), $"{tokens} little-endian float16 scales, one per token (max |x| / 127): {tokens * 2} bytes per row"));
        }
        if (columns.Image)
            list.Add(new("image", "binary", Value("binary"),
                $"the source image as JPEG bytes (EXIF orientation applied, sRGB, longer side at most {configuration.StoreImageMaxSide} px, quality {configuration.StoreImageQuality}); the same bytes on every view of the image"));
        if (columns.LabelMap)
            list.Add(new("label_map", "binary", Value("binary"), classes is { Column: ShardClasses.LabelMapColumn }
                ? $"the annotation as 8-bit PNG bytes at the stored image's size: pixel value v ≥ 1 is class name v − 1 of {classes.Names.Count}, 0 is 'other'"
                : "the annotation as 8-bit PNG bytes at the stored image's size (pixel values are class indices)"));
        return list;
    }

    /// <summary>The <c>huggingface</c> key-value metadata of every shard of the set: features and a description.</summary>
    public static string HuggingFaceJson(ShardDescription description)
    {
        var columns = Columns(description);
        var features = new JsonObject();
        foreach (var column in columns) features[column.Name] = column.Feature.DeepClone();
        var info = new JsonObject
        {
            ["description"] = Summary(description) + "\n" + string.Join("\n", columns.Select(c => $"{c.Name} ({c.Type}): {c.Meaning}.")) + ClassNote(description.Classes),
            ["features"] = features,
        };
        return new JsonObject { ["info"] = info }.ToJsonString(Readable);
    }

    /// <summary>JSON that keeps non-ASCII text and '+' as they are (valid JSON; the files are data, never HTML).</summary>
    internal static JsonSerializerOptions Readable { get; } = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>One paragraph: what the set is and where its format is described.</summary>
    public static string Summary(ShardDescription description)
    {
        var c = description.Configuration;
        string what = string.Join(" and ", new[]
        {
            c.Tokenizer is { } t ? $"{t.Architecture} codes" : null,
            c.Teacher is { } teacher ? $"{teacher.Architecture} features" : null,
        }.Where(s => s is not null));
        return $"MimFlow pre-tokenized shards ({ShardManifest.FormatName}): {(what.Length > 0 ? what : "augmentation records")} of the {c.Layout} {c.Split} split, " +
               $"one row per (image, view), {c.Views} view(s) per image, seed {c.Seed}, {c.Arithmetic}. Format: docs/shards.md of MimFlow.";
    }

    private static string ClassNote(ShardClasses? classes) => classes is { Column: ShardClasses.LabelMapColumn }
        ? "\nlabel_map class names (value v ≥ 1 is name v − 1): " + string.Join(", ", classes.Names)
        : "";

    private static string Grid(int codes)
    {
        int side = (int)Math.Round(Math.Sqrt(codes));
        return side * side == codes ? $" ({side}×{side} patches)" : "";
    }

    private static JsonObject Value(string dtype) => new() { ["dtype"] = dtype, ["_type"] = "Value" };

    private static JsonObject Sequence(JsonObject feature) => new() { ["feature"] = feature, ["length"] = -1, ["_type"] = "Sequence" };

    private static JsonObject ClassLabel(IReadOnlyList<string> names) =>
        new() { ["names"] = new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray()), ["_type"] = "ClassLabel" };
}
