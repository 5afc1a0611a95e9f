using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using MimFlow.Core.IO;

namespace MimFlow.Shards;

/// <summary>A frozen model's identity: its architecture and the SHA-256 of its config.json and weights.safetensors.</summary>
public sealed record ModelIdentity(string Architecture, string ConfigSha256, string WeightsSha256)
{
    public static ModelIdentity Of(string directory, string architecture) => new(
        architecture,
        Sha256Of(Path.Combine(directory, "config.json")),
        Sha256Of(Path.Combine(directory, "weights.safetensors")));

    public static string Sha256Of(string path)
    {
        using var stream = RegularFile.OpenRead(path, 1 << 16);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}

/// <summary>One finished shard file and the contiguous range of dataset samples it covers.</summary>
public sealed record ShardEntry(string Name, long Rows, long Bytes, string Sha256, int FirstSample, int Samples);

/// <summary>Everything that determines the rows: the same configuration gives the same rows (docs/shards.md).</summary>
public sealed record TokenizeConfiguration
{
    public required string Layout { get; init; }
    public required string Split { get; init; }
    public required int DatasetSamples { get; init; }
    public required int Views { get; init; }
    public required ulong Seed { get; init; }
    public required string Recipe { get; init; }
    public ModelIdentity? Tokenizer { get; init; }
    public ModelIdentity? Teacher { get; init; }
    public int TeacherLastLayers { get; init; } = 1;
    public bool TeacherProjection { get; init; }
    public FeatureEncoding? Features { get; init; }
    public int? StoreImageMaxSide { get; init; }
    public int StoreImageQuality { get; init; } = 90;
    public required int ShardIndex { get; init; }
    public required int ShardCount { get; init; }
    public required long TargetShardBytes { get; init; }
    public required int RowGroupRows { get; init; }
    public int? Limit { get; init; }
    /// <summary>Arithmetic the rows were computed with (cpu-float32 or cuda-bfloat16): codes can differ between them.</summary>
    public required string Arithmetic { get; init; }
}

/// <summary>
/// <c>manifest.json</c>: written last and atomically, so its presence means the set is complete. Lists every shard
/// with rows, bytes and SHA-256, the columns, the code grid, codebook size and feature shape, the quarantine count
/// and the full configuration including the identity of the tokenizer and teacher weights.
/// </summary>
public sealed record ShardManifest
{
    public const string FileName = "manifest.json";
    public const string FormatName = "mimflow-shards/1";

    public string Format { get; init; } = FormatName;
    public required TokenizeConfiguration Configuration { get; init; }
    public required ShardColumns Columns { get; init; }
    /// <summary>Codes per row (the tokenizer's grid), 0 without codes.</summary>
    public int CodeLength { get; init; }
    public int CodebookSize { get; init; }
    /// <summary>[tokens, dim] of the features, null without.</summary>
    public int[]? FeatureShape { get; init; }
    /// <summary>The dataset samples this part covers: [first, first + count).</summary>
    public required int FirstSample { get; init; }
    public required int SampleCount { get; init; }
    public required long Rows { get; init; }
    public required int Quarantined { get; init; }
    public required IReadOnlyList<ShardEntry> Shards { get; init; }
    /// <summary>The dataset's class names and the column they name (null: none, or a set written before they were
    /// recorded). The dataset card and the shards' metadata are made from them.</summary>
    public ShardClasses? Classes { get; init; }

    /// <summary>What the set's columns hold: the source of its shards' metadata and of its dataset card.</summary>
    [JsonIgnore]
    public ShardDescription Description => new(Configuration, Columns, Classes, CodeLength, CodebookSize, FeatureShape);

    public static JsonSerializerOptions Json { get; } = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>
    /// What every reader relies on before opening a shard: each shard a plain file name inside the set's folder (no
    /// path, no "..": a manifest must never send a reader elsewhere on the machine), listed once, with non-negative
    /// counts that add up to the manifest's, and a sane configuration.
    /// </summary>
    public void Validate(string path)
    {
        var configuration = Configuration ?? throw new InvalidDataException($"{path}: no configuration");
        if (Shards is null || Columns is null) throw new InvalidDataException($"{path}: no shard list or columns");
        if (configuration.Views < 1) throw new InvalidDataException($"{path}: views {configuration.Views}; a set has at least one view per image");
        if (Rows < 0 || SampleCount < 0 || FirstSample < 0 || Quarantined < 0 || CodeLength < 0 || CodebookSize < 0)
            throw new InvalidDataException($"{path}: negative counts (rows {Rows}, samples {FirstSample}+{SampleCount}, quarantined {Quarantined}, codes {CodeLength} of {CodebookSize})");
        if (Columns.Codes != (CodeLength > 0) || (Columns.Codes && CodebookSize < 1))
            throw new InvalidDataException($"{path}: the codes column and the code grid ({CodeLength} codes of {CodebookSize}) disagree");
        if ((Columns.Features is not null) != (FeatureShape is { Length: 2 } shape && shape[0] > 0 && shape[1] > 0))
            throw new InvalidDataException($"{path}: the features column and feature shape [{string.Join(", ", FeatureShape ?? [])}] disagree");
        // Bounds far above any real set, so that no damaged number sizes an allocation or overflows a count.
        if (configuration.Views > MaxViews) throw new InvalidDataException($"{path}: views {configuration.Views}, more than {MaxViews}");
        if (CodeLength > MaxCodeLength || CodebookSize > MaxCodebookSize)
            throw new InvalidDataException($"{path}: {CodeLength} codes of a codebook of {CodebookSize}, beyond {MaxCodeLength} codes of {MaxCodebookSize}");
        if (FeatureShape is [int tokens, int dim] && (tokens > MaxCodeLength + 1 || dim > MaxFeatureDim))
            throw new InvalidDataException($"{path}: feature shape [{tokens}, {dim}] beyond [{MaxCodeLength + 1}, {MaxFeatureDim}]");
        if ((long)FirstSample + SampleCount > int.MaxValue || Rows / configuration.Views > int.MaxValue)
            throw new InvalidDataException($"{path}: samples {FirstSample}+{SampleCount} and {Rows} rows exceed what a set can hold");
        if (Classes is not null)
        {
            if (Classes.Column is not (ShardClasses.LabelColumn or ShardClasses.LabelMapColumn) || Classes.Names is null)
                throw new InvalidDataException($"{path}: classes must name the label or label_map column and list the names");
            if (Classes.Names.Count > MaxClasses || Classes.Names.Any(n => n is null))
                throw new InvalidDataException($"{path}: {Classes.Names.Count} class names, more than {MaxClasses} or with a null among them");
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        long rows = 0;
        foreach (var shard in Shards)
        {
            if (shard is null) throw new InvalidDataException($"{path}: a null shard entry");
            if (!PathNames.IsPlainFileName(shard.Name))
                throw new InvalidDataException($"{path}: shard '{shard.Name}' is not a file name inside the set's folder");
            if (!names.Add(shard.Name)) throw new InvalidDataException($"{path}: shard '{shard.Name}' is listed twice");
            if (shard.Rows < 0 || shard.Bytes < 0 || shard.Samples < 0 || shard.FirstSample < 0)
                throw new InvalidDataException($"{path}: shard '{shard.Name}' has negative counts (rows {shard.Rows}, bytes {shard.Bytes}, samples {shard.FirstSample}+{shard.Samples})");
            if (shard.Sha256 is not { Length: 64 } || !shard.Sha256.All(char.IsAsciiHexDigitLower))
                throw new InvalidDataException($"{path}: shard '{shard.Name}' has no SHA-256 of 64 lower-case hex digits");
            if ((long)shard.FirstSample + shard.Samples > int.MaxValue)
                throw new InvalidDataException($"{path}: shard '{shard.Name}' covers samples {shard.FirstSample}+{shard.Samples}, past what a set can hold");
            if (shard.Rows % configuration.Views != 0)
                throw new InvalidDataException($"{path}: shard '{shard.Name}' has {shard.Rows} rows, not a whole number of images at {configuration.Views} views");
            rows = checked(rows + shard.Rows);
        }
        if (rows != Rows) throw new InvalidDataException($"{path}: the shards list {rows} rows, the manifest says {Rows}");
    }

    public const int MaxViews = 1024;
    public const long MaxManifestBytes = 64L << 20;
    public const int MaxCodeLength = 1 << 16;
    public const int MaxCodebookSize = 1 << 20;
    public const int MaxFeatureDim = 1 << 16;
    public const int MaxClasses = 1 << 20;

    public void Write(string directory) => AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, Json));

    public static ShardManifest Read(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no manifest (the set is incomplete, or this is not a shard folder)", path);
        try
        {
            var manifest = JsonSerializer.Deserialize<ShardManifest>(RegularFile.ReadAllText(path, MaxManifestBytes), Json) ?? throw new InvalidDataException($"{path}: empty manifest");
            if (manifest.Format != FormatName) throw new InvalidDataException($"{path}: format '{manifest.Format}' is not {FormatName}");
            manifest.Validate(path);
            return manifest;
        }
        catch (Exception e) when (e is JsonException or OverflowException or NotSupportedException)
        {
            throw new InvalidDataException($"{path}: not a shard manifest ({e.Message})", e);
        }
    }
}
