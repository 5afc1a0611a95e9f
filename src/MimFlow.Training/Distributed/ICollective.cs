using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>
/// The collectives data-parallel training needs, on an engine the field already runs: sums across ranks of the flat
/// gradient buffer and of a few host numbers (loss sums and counts, iBOT's centre statistics), a broadcast of bytes
/// (a handshake, an NCCL unique id) and a barrier. Every rank calls the same operations in the same order; each call
/// names what it carries so a timeout or a failure can say which step of the protocol a lost rank broke.
/// </summary>
public interface ICollective : IDisposable
{
    /// <summary>"single", "mpi" or "nccl".</summary>
    string Backend { get; }

    int Rank { get; }

    int WorldSize { get; }

    /// <summary>The rank among the processes of this node: which GPU the process drives.</summary>
    int LocalRank { get; }

    /// <summary>Sums a contiguous float32 or float64 tensor across ranks in place (every rank holds the sum after).</summary>
    void AllReduceSum(Tensor buffer, string what);

    /// <summary>Sums host values across ranks in place.</summary>
    void AllReduceSum(double[] values, string what);

    /// <summary>Replaces <paramref name="bytes"/> on every rank with <paramref name="root"/>'s (same length everywhere).</summary>
    void Broadcast(byte[] bytes, int root, string what);

    /// <summary>
    /// Ends every rank of the job after this one failed (MPI_Abort; NCCL: abort the communicator and exit, the liveness
    /// line tells the others), so no rank waits in a collective for one that will never come. Writes the message first.
    /// </summary>
    void Abort(string message);
}

/// <summary>One process: every collective is the identity, so a run without a launcher is today's run, bit for bit.</summary>
public sealed class SingleProcess : ICollective
{
    public static SingleProcess Instance { get; } = new();

    private SingleProcess()
    {
    }

    public string Backend => "single";
    public int Rank => 0;
    public int WorldSize => 1;
    public int LocalRank => 0;

    public void AllReduceSum(Tensor buffer, string what)
    {
    }

    public void AllReduceSum(double[] values, string what)
    {
    }

    public void Broadcast(byte[] bytes, int root, string what)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), root, $"{what}: a single process has only rank 0");
    }

    public void Abort(string message)
    {
    }

    public void Dispose()
    {
    }
}

/// <summary>The rows of a global batch one rank reads, decodes and computes: [Offset, Offset + Count) of Global.</summary>
public readonly record struct BatchSlice(int Offset, int Count, int Global)
{
    public static BatchSlice Whole(int batch) => new(0, batch, batch);

    /// <summary>Rank r of n takes rows [⌊B·r/n⌋, ⌊B·(r+1)/n⌋): contiguous, balanced to one row, in rank order, so the
    /// ranks' slices laid end to end are the single-process batch.</summary>
    public static BatchSlice Of(int globalBatch, int rank, int worldSize)
    {
        if (worldSize < 1 || rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank {rank} is not in 0..{worldSize - 1}");
        if (globalBatch < worldSize)
            throw new ArgumentException($"the global batch {globalBatch} is smaller than the world size {worldSize}: every rank needs at least one image of each batch (--batch stays the global batch)");
        int start = (int)((long)globalBatch * rank / worldSize), end = (int)((long)globalBatch * (rank + 1) / worldSize);
        return new BatchSlice(start, end - start, globalBatch);
    }

    public bool IsWhole => Offset == 0 && Count == Global;

    /// <summary>
    /// This rank's rows of each full global batch of an epoch's sample order (a last partial batch is dropped), to be
    /// read in batches of <see cref="Count"/>: the ranks together read the very batches one process would.
    /// </summary>
    public int[] TakeFrom(int[] order)
    {
        long batches = order.Length / Global;
        var mine = new int[batches * Count];
        for (long b = 0; b < batches; b++) Array.Copy(order, b * Global + Offset, mine, b * Count, Count);
        return mine;
    }

    public bool Contains(long indexInBatch) => indexInBatch >= Offset && indexInBatch < Offset + Count;
}
