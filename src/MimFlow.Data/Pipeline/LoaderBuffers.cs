using System.Buffers;
using MimFlow.Data.Augment;

namespace MimFlow.Data.Pipeline;

/// <summary>
/// One loader's pools for its batches and for each sample between render and collate. Not <c>ArrayPool.Shared</c>:
/// it keeps a returned array in the returning thread's own slot first, out of reach of other threads, and batches are
/// handed back by the consumer's thread and rented by the collate step's, samples rented by decode workers and
/// handed back by the collate step; so most of them landed on fresh pages (page faults and zeroing were ~10 % of a
/// segmentation run's CPU). These pools share every returned array among threads and keep what was returned for the
/// loader's life, which is bounded by what it had in flight at once.
/// </summary>
internal sealed class LoaderBuffers(IReadOnlyList<ViewShape> views, LoaderOptions options)
{
    private const int MostArraysOfOneSize = 4096;

    public ArrayPool<byte> Bytes { get; } = ArrayPool<byte>.Create(Largest(views, options), Math.Min(MostArraysOfOneSize, options.MaxSamplesInFlight * (views.Count + 1)));
    public ArrayPool<float> Floats { get; } = ArrayPool<float>.Create(Largest(views, options), Math.Min(MostArraysOfOneSize, options.MaxSamplesInFlight * views.Count));

    private static int Largest(IReadOnlyList<ViewShape> views, LoaderOptions options) =>
        (int)Math.Min(Array.MaxLength, Math.Max(16L, (long)options.BatchSize * views.Max(v => v.Bytes)));
}
