namespace MimFlow.Core.Status;

public enum JobState
{
    /// <summary>A process holds the folder's lock now.</summary>
    Running,

    /// <summary>All planned work is done.</summary>
    Finished,

    /// <summary>Not running and not finished: interrupted or failed; the same command resumes it.</summary>
    Stopped,
}

/// <summary>
/// What <c>mimflow status</c> reports about a folder a command writes (a training run, a shard set, a pipeline run):
/// how far it is, since when, at what rate and how long it has left, its last durable point (checkpoint or journal
/// entry), and whether a process is working on it now (its lock). Read from the folder alone: nothing is taken, and
/// nothing of a running job is disturbed.
/// </summary>
public sealed record JobStatus
{
    /// <summary>The command that writes the folder: pretrain, finetune, segment, train-tokenizer, tokenize, merge, run.</summary>
    public required string Kind { get; init; }

    public required string Path { get; init; }

    public required JobState State { get; init; }

    /// <summary>The process working on it now (from the folder's lock), where one is.</summary>
    public MimFlow.Core.IO.LockHolder? Holder { get; init; }

    public double Done { get; init; }

    /// <summary>The planned amount, or 0 where unknown.</summary>
    public double Total { get; init; }

    /// <summary>What Done counts: steps, samples, stages.</summary>
    public required string Unit { get; init; }

    /// <summary>The first start of the work (a resumed job keeps its first start).</summary>
    public DateTimeOffset? Started { get; init; }

    /// <summary>The last start, where the job was resumed after the first.</summary>
    public DateTimeOffset? Resumed { get; init; }

    /// <summary>The last time the job recorded progress (a metrics line, a journal entry).</summary>
    public DateTimeOffset? LastActivity { get; init; }

    /// <summary>Units per second over the recent records of the current start; null where too few.</summary>
    public double? Rate { get; init; }

    /// <summary>Where the job would go on from: the last checkpoint or journal entry, in words.</summary>
    public string? LastDurablePoint { get; init; }

    /// <summary>Further facts in display order (last loss, device, rows, quarantined, …).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Facts { get; init; } = [];

    /// <summary>The jobs inside (a pipeline's stage outputs).</summary>
    public IReadOnlyList<JobStatus> Parts { get; init; } = [];

    /// <summary>A time as status reports write it: UTC to the second.</summary>
    public static string Stamp(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Time left at <see cref="Rate"/>, for running jobs with a known total.</summary>
    public TimeSpan? Eta => State == JobState.Running && Total > 0 && Rate is double rate && rate > 0
        ? TimeSpan.FromSeconds(Math.Min(Math.Max(0, Total - Done) / rate, TimeSpan.MaxValue.TotalSeconds / 2))
        : null;
}
