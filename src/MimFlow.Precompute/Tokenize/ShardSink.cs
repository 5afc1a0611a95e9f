using MimFlow.Data.Quarantine;
using MimFlow.Shards;

namespace MimFlow.Precompute.Tokenize;

/// <summary>
/// The writing end of pre-tokenization: rows in sample order go into row groups of the configured size, and a shard
/// is finished once it reaches the target size, always between two samples, so every shard covers a contiguous
/// range of samples: <c>part-IIIII-SSSSS.parquet</c> (part index, sequence). Finished shards go to the journal with
/// the quarantine entries of the samples they cover.
/// </summary>
internal sealed class ShardSink(TokenizeRequest request, ShardSchema schema, TokenizeJournal journal, int firstUncovered, Action? shardFinished = null)
{
    private readonly List<ShardRow> buffered = [];
    private readonly HashSet<int> quarantineRecorded = journal.Quarantine.Where(q => q.SampleIndex is not null).Select(q => q.SampleIndex!.Value).ToHashSet();
    private ShardFileWriter? writer;
    private long bufferedBytes;
    private int shardFirstSample = firstUncovered;
    private long rows = journal.Shards.Sum(s => s.Rows);

    public long Rows => rows;

    /// <summary>Shards finished (journaled) so far.</summary>
    public int ShardCount => journal.Shards.Count;

    public async Task AddAsync(SampleRows sample, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        writer ??= await ShardFileWriter.CreateAsync(schema, Path.Combine(request.OutputDirectory, NextName()), cancellationToken);
        foreach (var row in sample.Rows) buffered.Add(row);
        bufferedBytes += sample.PayloadBytes;
        rows += sample.Rows.Count;
        if (buffered.Count >= request.RowGroupRows) await FlushGroupAsync(cancellationToken);
        if (writer.BytesWritten + bufferedBytes >= request.TargetShardBytes) await CompleteShardAsync(sample.SampleIndex + 1, quarantine, cancellationToken);
    }

    /// <summary>Finishes the last shard so that it covers the part up to <paramref name="end"/>.</summary>
    public async Task FinishAsync(int end, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        if (writer is not null) await CompleteShardAsync(end, quarantine, cancellationToken);
        else journal.RecordTail(Unrecorded(quarantine, end));
    }

    /// <summary>Removes the unfinished shard (an interrupted run leaves no partial file under a final name).</summary>
    public async Task AbandonAsync()
    {
        if (writer is not null) await writer.DisposeAsync();
        writer = null;
    }

    private async Task FlushGroupAsync(CancellationToken cancellationToken)
    {
        await writer!.WriteRowGroupAsync(buffered, cancellationToken);
        buffered.Clear();
        bufferedBytes = 0;
    }

    private async Task CompleteShardAsync(int end, QuarantineLog quarantine, CancellationToken cancellationToken)
    {
        await FlushGroupAsync(cancellationToken);
        var file = await writer!.CompleteAsync();
        await writer.DisposeAsync();
        writer = null;
        journal.Record(new ShardEntry(file.Name, file.Rows, file.Bytes, file.Sha256, shardFirstSample, end - shardFirstSample), Unrecorded(quarantine, end));
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
