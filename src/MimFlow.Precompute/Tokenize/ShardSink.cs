using MimFlow.Core.IO;
using MimFlow.Data.Quarantine;
using MimFlow.Shards;

namespace MimFlow.Precompute.Tokenize;

/// <summary>
/// The writing end of pre-tokenization: rows in sample order go into row groups of the configured size, and a shard
/// is finished once it reaches the target size, always between two samples, so every shard covers a contiguous
/// range of samples: <c>part-IIIII-SSSSS.parquet</c> (part index, sequence). Finished shards go to the journal with
/// the quarantine entries of the samples they cover.
/// <para>
/// A shard is written to a temporary file and renamed when whole, so after a transient I/O error (EIO, ESTALE … on a
/// network file system) the shard is written again as a whole, to a new temporary file, from the row groups it holds
/// so far: the rows of the shard being written stay in memory until it is renamed (at most about the target size).
/// Neither a failed write nor a failed flush is trusted to have written anything: after an fsync error the kernel
/// may have dropped the pages, so retrying the flush alone could report success over lost data.
/// </para>
/// </summary>
internal sealed class ShardSink(TokenizeRequest request, ShardSchema schema, TokenizeJournal journal, int firstUncovered, Action? shardFinished = null)
{
    private readonly List<ShardRow> buffered = [];
    private readonly List<IReadOnlyList<ShardRow>> shardGroups = [];
    private readonly HashSet<int> quarantineRecorded = journal.Quarantine.Where(q => q.SampleIndex is not null).Select(q => q.SampleIndex!.Value).ToHashSet();
    private readonly TransientIo io = request.Io ?? new TransientIo();
    private ShardFileWriter? writer;
    private long bufferedBytes;
    private int shardFirstSample = firstUncovered;
    private long rows = journal.Shards.Sum(s => s.Rows);

    public long Rows => rows;

    /// <summary>Shards finished (journaled) so far.</summary>
    public int ShardCount => journal.Shards.Count;

    private string ShardPath => Path.Combine(request.OutputDirectory, NextName());

    public async Task AddAsync(SampleRows sample, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        if (writer is null)
            await io.RunAsync(ShardPath, "starting the shard", async (_, token) => writer = await ShardFileWriter.CreateAsync(schema, ShardPath, io.Files, token), cancellationToken);
        foreach (var row in sample.Rows) buffered.Add(row);
        bufferedBytes += sample.PayloadBytes;
        rows += sample.Rows.Count;
        if (buffered.Count >= request.RowGroupRows) await FlushGroupAsync(cancellationToken);
        if (writer!.BytesWritten + bufferedBytes >= request.TargetShardBytes) await CompleteShardAsync(sample.SampleIndex + 1, quarantine, cancellationToken);
    }

    /// <summary>Finishes the last shard so that it covers the part up to <paramref name="end"/>.</summary>
    public async Task FinishAsync(int end, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        if (writer is not null) await CompleteShardAsync(end, quarantine, cancellationToken);
        else
        {
            var entries = Unrecorded(quarantine, end);
            io.Run(Path.Combine(request.OutputDirectory, TokenizeJob.ProgressFileName), "writing the journal", attempt =>
            {
                if (attempt == 0) journal.RecordTail(entries);
                else journal.Save();
            }, cancellationToken);
        }
    }

    /// <summary>Removes the unfinished shard (an interrupted run leaves no partial file under a final name).</summary>
    public async Task AbandonAsync()
    {
        if (writer is not null) await writer.DisposeAsync();
        writer = null;
    }

    private async Task FlushGroupAsync(CancellationToken cancellationToken)
    {
        var group = buffered.ToList();
        shardGroups.Add(group);
        buffered.Clear();
        bufferedBytes = 0;
        await io.RunAsync(ShardPath, $"writing row group {shardGroups.Count - 1}", async (attempt, token) =>
        {
            if (attempt == 0) await writer!.WriteRowGroupAsync(group, token);
            else await RewriteAsync(token);
        }, cancellationToken);
    }

    /// <summary>The shard from its start: a new temporary file with every row group so far (the old one is deleted).
    /// The writer is deterministic, so the bytes are those an undisturbed write gives.</summary>
    private async Task RewriteAsync(CancellationToken cancellationToken)
    {
        if (writer is not null) await writer.DisposeAsync();
        writer = null;
        var fresh = await ShardFileWriter.CreateAsync(schema, ShardPath, io.Files, cancellationToken);
        try
        {
            foreach (var group in shardGroups) await fresh.WriteRowGroupAsync(group, cancellationToken);
        }
        catch
        {
            await fresh.DisposeAsync();
            throw;
        }
        writer = fresh;
    }

    private async Task CompleteShardAsync(int end, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        await FlushGroupAsync(cancellationToken);
        var file = await io.RunAsync(ShardPath, "finishing the shard", async (attempt, token) =>
        {
            if (attempt > 0 || writer is null) await RewriteAsync(token);
            return await writer!.CompleteAsync();
        }, cancellationToken);
        await writer!.DisposeAsync();
        writer = null;
        shardGroups.Clear();
        var entry = new ShardEntry(file.Name, file.Rows, file.Bytes, file.Sha256, shardFirstSample, end - shardFirstSample);
        var entries = Unrecorded(quarantine, end);
        io.Run(Path.Combine(request.OutputDirectory, TokenizeJob.ProgressFileName), "writing the journal", attempt =>
        {
            // Recorded once: a retry only writes the journal again.
            if (attempt == 0) journal.Record(entry, entries);
            else journal.Save();
        }, cancellationToken);
        shardFirstSample = end;
        shardFinished?.Invoke();
    }

    private List<QuarantineEntry> Unrecorded(QuarantineLog quarantine, int end)
    {
        var entries = quarantine.Entries.Where(q => q.SampleIndex is int i && i < end && quarantineRecorded.Add(i)).OrderBy(q => q.SampleIndex).ToList();
        return entries;
    }

    private string NextName() => $"part-{request.ShardIndex:D5}-{journal.Shards.Count:D5}.parquet";
}
