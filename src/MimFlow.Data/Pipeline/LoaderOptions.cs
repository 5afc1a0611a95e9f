using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;

namespace MimFlow.Data.Pipeline;

public enum PixelFormat
{
    /// <summary>Planar uint8 0..255 for every view (normalise on the device).</summary>
    UInt8,

    /// <summary>float32: the first view normalised with ImageNet mean/std, further views (tokenizer inputs) scaled to [0, 1].</summary>
    Float32,
}

/// <summary>How the loader reads, decodes and batches one epoch.</summary>
public sealed record LoaderOptions
{
    public int BatchSize { get; init; } = 64;
    public ulong Seed { get; init; }
    public int Epoch { get; init; }

    /// <summary>Visit samples in a seeded permutation per epoch (else in listing order).</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>Keep a last, smaller batch (else drop it).</summary>
    public bool KeepPartialBatch { get; init; } = true;

    /// <summary>Parallel decode + augment workers (libvips runs single-threaded inside each).</summary>
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>Concurrent file reads.</summary>
    public int ReadConcurrency { get; init; } = 8;

    /// <summary>Finished batches waiting for the consumer.</summary>
    public int PrefetchBatches { get; init; } = 2;

    public PixelFormat Format { get; init; } = PixelFormat.Float32;

    /// <summary>Mask drawn per sample (null: no masks).</summary>
    public IMaskGenerator? Masks { get; init; }

    /// <summary>Masks per sample, one for each of the first views (iBOT masks both global crops).</summary>
    public int MaskedViews { get; init; } = 1;

    public DecodeLimits Limits { get; init; } = DecodeLimits.Default;

    /// <summary>Retries of a transient read error (with jittered exponential backoff) before the file is quarantined.</summary>
    public int ReadRetries { get; init; } = 3;

    /// <summary>Stop after this many samples of the epoch order (benchmarks, previews); null for all.</summary>
    public int? Limit { get; init; }

    /// <summary>
    /// Visit exactly these sample indices in this order (a shard's range, a resumed run's remainder); overrides
    /// <see cref="Shuffle"/> and <see cref="Limit"/>. Augmentations stay those of each sample's own index.
    /// </summary>
    public IReadOnlyList<int>? Samples { get; init; }

    public void Validate()
    {
        if (BatchSize < 1) throw new ArgumentException($"the batch size must be at least 1 (got {BatchSize}).");
        if (DecodeWorkers < 1) throw new ArgumentException($"decode workers must be at least 1 (got {DecodeWorkers}).");
        if (ReadConcurrency < 1) throw new ArgumentException($"read concurrency must be at least 1 (got {ReadConcurrency}).");
        if (PrefetchBatches < 1) throw new ArgumentException($"prefetch must be at least 1 batch (got {PrefetchBatches}).");
        if (MaskedViews < 1) throw new ArgumentException($"masked views must be at least 1 (got {MaskedViews}).");
    }

    /// <summary>
    /// The most samples alive at once, whatever the dataset size: reads in flight and queued (2 × read concurrency,
    /// as encoded bytes), decodes in flight and queued (4 × workers, as rendered views), the batch being filled, the
    /// prefetched batches and the one the consumer holds.
    /// </summary>
    public int MaxSamplesInFlight => 2 * ReadConcurrency + 4 * DecodeWorkers + BatchSize * (PrefetchBatches + 2);
}
