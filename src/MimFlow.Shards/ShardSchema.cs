using Parquet.Schema;

namespace MimFlow.Shards;

/// <summary>How teacher features are stored: fp16 (2 bytes per value) or int8 with one fp16 scale per token.</summary>
public enum FeatureEncoding { Fp16, Int8 }

/// <summary>Which optional columns a shard set has (fixed for the whole set, recorded in the manifest).</summary>
public sealed record ShardColumns(bool Codes, FeatureEncoding? Features, bool Image, bool LabelMap);

/// <summary>
/// One row: one view of one image. The column names are fixed (docs/shards.md): <c>sample_id</c>, <c>path</c>,
/// <c>label</c>, <c>view</c>, <c>augment</c>, <c>source_width</c>, <c>source_height</c>, <c>codes</c>,
/// <c>features</c>, <c>feature_scales</c>, <c>image</c>, <c>label_map</c>.
/// </summary>
/// <param name="SampleId">16 hex digits of SHA-256 over the path relative to the dataset root ('/'-separated, UTF-8).</param>
/// <param name="Augment">The view's <c>AugmentParams</c> as JSON (crop in source pixels, flip, pixel ops): replayable.</param>
/// <param name="SourceWidth">Display width of the source image (after EXIF orientation): the crop's frame.</param>
/// <param name="Codes">The tokenizer's code per patch, row-major over its grid.</param>
/// <param name="Features">Teacher patch features [N, D], little-endian fp16 or int8.</param>
/// <param name="FeatureScales">int8 only: one fp16 scale per token (value = int8 · scale).</param>
/// <param name="Image">The source re-encoded as JPEG (EXIF orientation applied), at most the configured side.</param>
/// <param name="LabelMap">ADE20K: the annotation as 8-bit PNG at the stored image's size (nearest).</param>
public sealed record ShardRow(
    string SampleId, string Path, int? Label, int View, string Augment, int SourceWidth, int SourceHeight,
    short[]? Codes, byte[]? Features, byte[]? FeatureScales, byte[]? Image, byte[]? LabelMap);

/// <summary>The Parquet schema of a shard set and its fields, named as <see cref="ShardRow"/> documents.</summary>
public sealed class ShardSchema
{
    /// <summary>Codes are stored as int16 (list&lt;int16&gt;): 0..32767. A larger codebook is refused rather than wrapped.</summary>
    public const int MaxCodebookSize = short.MaxValue + 1;

    /// <param name="description">What the rows mean: when given, every file written with this schema carries it as
    /// <c>huggingface</c> key-value metadata (<see cref="ShardMetadata"/>); readers need none.</param>
    public ShardSchema(ShardColumns columns, ShardDescription? description = null)
    {
        if (description is not null && description.Columns != columns)
            throw new ArgumentException("the description is of another column set than the schema", nameof(description));
        Columns = columns;
        Description = description;
        KeyValueMetadata = description is null
            ? new Dictionary<string, string>()
            : new Dictionary<string, string> { [ShardMetadata.HuggingFaceKey] = ShardMetadata.HuggingFaceJson(description) };
        var fields = new List<Field> { SampleId, PathField, Label, View, Augment, SourceWidth, SourceHeight };
        if (columns.Codes) fields.Add(Codes);
        if (columns.Features is FeatureEncoding encoding)
        {
            fields.Add(Features);
            if (encoding == FeatureEncoding.Int8) fields.Add(FeatureScales);
        }
        if (columns.Image) fields.Add(Image);
        if (columns.LabelMap) fields.Add(LabelMap);
        Parquet = new ParquetSchema(fields);
    }

    public ShardColumns Columns { get; }
    public ShardDescription? Description { get; }
    public ParquetSchema Parquet { get; }

    /// <summary>The file's key-value metadata (empty without a description).</summary>
    public IReadOnlyDictionary<string, string> KeyValueMetadata { get; }

    public DataField<string> SampleId { get; } = new("sample_id");
    public DataField<string> PathField { get; } = new("path");
    /// <summary>int64 because that is what a Hugging Face ClassLabel is stored as (its metadata is honoured only on an
    /// int64 column); sets written before were int32, which <see cref="ShardReader"/> still reads.</summary>
    public DataField<long?> Label { get; } = new("label");
    public DataField<int> View { get; } = new("view");
    public DataField<string> Augment { get; } = new("augment");
    public DataField<int> SourceWidth { get; } = new("source_width");
    public DataField<int> SourceHeight { get; } = new("source_height");
    public ListField Codes { get; } = new("codes", new DataField<short>("element"));
    public DataField CodeValues => (DataField)Codes.Item;
    public DataField<byte[]> Features { get; } = new("features");
    public DataField<byte[]> FeatureScales { get; } = new("feature_scales");
    public DataField<byte[]> Image { get; } = new("image");
    public DataField<byte[]> LabelMap { get; } = new("label_map");

    /// <summary>The column names in file order, for verification.</summary>
    public IReadOnlyList<string> ColumnNames => Parquet.Fields.Select(f => f.Name).ToList();
}
