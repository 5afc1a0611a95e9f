using MimFlow.Data.Sources;

namespace MimFlow.Data.Packing;

/// <summary>The storage forms a folder layout can be packed into.</summary>
public enum PackFormat { Wds, HfParquet }

/// <summary>What <c>mimflow datasets pack</c> runs: a folder layout (ImageNet or ADE20K) turned into WebDataset tars or
/// Hugging Face Parquet files, sample for sample in listing order.</summary>
public sealed record PackRequest
{
    /// <summary>The dataset root in its folder layout.</summary>
    public required string From { get; init; }

    /// <summary><see cref="DatasetLayout.ImageNet"/> or <see cref="DatasetLayout.Ade20k"/>.</summary>
    public DatasetLayout Layout { get; init; } = DatasetLayout.ImageNet;

    public PackFormat Format { get; init; } = PackFormat.Wds;

    public required string OutputDirectory { get; init; }

    /// <summary>A shard is closed after the first sample that brings it to this size.</summary>
    public long ShardBytes { get; init; } = 256L << 20;

    /// <summary>The splits to pack; null: both (a missing validation split is skipped).</summary>
    public DatasetSplit? Split { get; init; }

    /// <summary>hf-parquet rows per row group (Hugging Face writes 100 for image datasets); a group is also closed at 64 MiB.</summary>
    public int RowGroupRows { get; init; } = 100;

    /// <summary>ImageNet with a flat <c>val/</c>: the ground-truth file.</summary>
    public string? GroundTruth { get; init; }

    /// <summary>Replace shards of the same split (and the classes file) that an earlier pack wrote; off: they are refused.</summary>
    public bool Force { get; init; }

    /// <summary>Files read ahead of the writer.</summary>
    public int ReadConcurrency { get; init; } = 4;

    public void Validate()
    {
        if (Layout is not (DatasetLayout.ImageNet or DatasetLayout.Ade20k))
            throw new ArgumentException($"pack reads the imagenet or ade20k folder layout, not {DatasetLayouts.Name(Layout)}");
        if (ShardBytes < 1) throw new ArgumentException($"the shard size must be positive (got {ShardBytes} bytes)");
        if (RowGroupRows < 1) throw new ArgumentException($"row groups need at least 1 row (got {RowGroupRows})");
        if (ReadConcurrency < 1) throw new ArgumentException($"read concurrency must be at least 1 (got {ReadConcurrency})");
    }
}

/// <param name="Split">train or val.</param>
/// <param name="Files">The shards written, full paths, in order.</param>
/// <param name="Replaced">Earlier shards of the split removed under <see cref="PackRequest.Force"/>.</param>
public sealed record PackedSplit(string Split, int Samples, IReadOnlyList<string> Files, long Bytes, IReadOnlyList<string> Replaced);

public sealed record PackResult(string OutputDirectory, PackFormat Format, IReadOnlyList<PackedSplit> Splits, IReadOnlyList<string> Classes, TimeSpan Elapsed);

public sealed record PackProgress(string Split, int Done, int Total);

/// <summary>The output holds a pack of this split already and <see cref="PackRequest.Force"/> was not given.</summary>
public sealed class PackOutputExistsException(string path)
    : IOException($"{path} already holds a packed split; pass --force to replace it (nothing was written)")
{
    public string Path { get; } = path;
}
