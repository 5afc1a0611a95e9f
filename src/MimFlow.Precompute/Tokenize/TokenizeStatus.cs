using System.Globalization;
using MimFlow.Core.IO;
using MimFlow.Core.Status;
using MimFlow.Shards;

namespace MimFlow.Precompute.Tokenize;

/// <summary>
/// The status of a shard folder: complete (<c>manifest.json</c>: rows, shards, quarantined) or being tokenized
/// (<c>progress.json</c>, the journal: samples covered by finished shards of the part, the last shard, when the part
/// was started and resumed; the rate is that of the shards finished since the last start), and the folder's lock.
/// </summary>
public static class TokenizeStatus
{
    /// <summary>The status, or null when the folder holds neither a manifest nor a tokenize journal.</summary>
    public static JobStatus? Read(string directory)
    {
        string manifestPath = Path.Combine(directory, ShardManifest.FileName);
        string journalPath = Path.Combine(directory, TokenizeJob.ProgressFileName);
        var holder = OutputLock.Holder(directory);
        bool running = holder is not null || OutputLock.IsHeld(directory);
        if (File.Exists(manifestPath))
        {
            var manifest = ShardManifest.Read(directory);
            var finished = File.GetLastWriteTimeUtc(manifestPath);
            return new JobStatus
            {
                Kind = "tokenize", Path = Path.GetFullPath(directory), Holder = holder, State = running ? JobState.Running : JobState.Finished,
                Done = manifest.SampleCount, Total = manifest.SampleCount, Unit = "samples", LastActivity = finished,
                LastDurablePoint = $"{ShardManifest.FileName}: the set is complete ({JobStatus.Stamp(finished)})",
                Facts = Facts(manifest.Rows, manifest.Shards.Count, manifest.Quarantined, manifest.Configuration),
            };
        }
        if (!File.Exists(journalPath)) return null;

        var journal = TokenizeJournal.Parse(journalPath);
        var (first, end) = TokenizeJob.PartRange(journal.Configuration);
        int covered = journal.Shards.Count > 0 ? journal.Shards[^1].FirstSample + journal.Shards[^1].Samples : first;
        var quarantined = journal.Quarantine.Select(q => q.SampleIndex).OfType<int>().ToHashSet();
        // A part that ends in refused samples records them past its last shard.
        while (covered < end && quarantined.Contains(covered)) covered++;
        var lastShard = journal.Shards.LastOrDefault();
        DateTimeOffset? ShardTime(ShardEntry shard) => File.Exists(Path.Combine(directory, shard.Name)) ? File.GetLastWriteTimeUtc(Path.Combine(directory, shard.Name)) : null;

        double? rate = null;
        if (journal.Resumed is DateTimeOffset resumed)
        {
            var since = journal.Shards.Where(s => ShardTime(s) is { } t && t >= resumed).ToList();
            if (since.Count > 0 && ShardTime(since[^1]) is { } latest && latest > resumed)
                rate = since.Sum(s => s.Samples) / (latest - resumed).TotalSeconds;
        }
        return new JobStatus
        {
            Kind = "tokenize", Path = Path.GetFullPath(directory), Holder = holder, State = running ? JobState.Running : JobState.Stopped,
            Done = covered - first, Total = end - first, Unit = "samples",
            Started = journal.Started, Resumed = journal.Resumed is { } r && journal.Started is { } s && r > s ? r : null,
            LastActivity = File.GetLastWriteTimeUtc(journalPath), Rate = rate,
            LastDurablePoint = lastShard is null
                ? $"{TokenizeJob.ProgressFileName}: no shard finished yet"
                : $"shard {lastShard.Name} (samples {lastShard.FirstSample}..{lastShard.FirstSample + lastShard.Samples - 1}, {lastShard.Rows} rows{(ShardTime(lastShard) is { } t ? $", {JobStatus.Stamp(t)}" : "")})",
            Facts = Facts(journal.Shards.Sum(x => x.Rows), journal.Shards.Count, journal.Quarantine.Count, journal.Configuration),
        };
    }

    private static List<KeyValuePair<string, string>> Facts(long rows, int shards, int quarantined, TokenizeConfiguration configuration) =>
    [
        new("rows", rows.ToString("N0", CultureInfo.InvariantCulture)),
        new("shards", shards.ToString(CultureInfo.InvariantCulture)),
        new("quarantined", quarantined.ToString(CultureInfo.InvariantCulture)),
        new("part", $"{configuration.ShardIndex}/{configuration.ShardCount} of {configuration.DatasetSamples:N0} samples ({configuration.Layout}, {configuration.Split}), {configuration.Views} view(s)"),
        new("models", string.Join(", ", new[] { configuration.Tokenizer is { } t ? $"tokenizer {t.Architecture} ({t.WeightsSha256[..Math.Min(12, t.WeightsSha256.Length)]})" : null, configuration.Teacher is { } f ? $"teacher {f.Architecture} ({f.WeightsSha256[..Math.Min(12, f.WeightsSha256.Length)]})" : null }.OfType<string>())),
    ];

}
