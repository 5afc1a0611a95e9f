using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Data.Quarantine;
using MimFlow.Shards;

namespace MimFlow.Precompute.Tokenize;

/// <summary>
/// <c>progress.json</c>: the configuration of the run and every shard finished so far (with the quarantine entries of
/// the samples it covers), rewritten atomically after each shard. On start it is the resume point; anything in the
/// folder it does not list (half-written temporaries, a shard renamed just before a crash) is removed.
/// </summary>
public sealed class TokenizeJournal
{
    private readonly string directory;

    private TokenizeJournal(string directory, TokenizeConfiguration configuration, List<ShardEntry> shards, List<QuarantineEntry> quarantine, DateTimeOffset started)
    {
        this.directory = directory;
        Configuration = configuration;
        Shards = shards;
        Quarantine = quarantine;
        Started = started;
        Resumed = DateTimeOffset.UtcNow;
    }

    public TokenizeConfiguration Configuration { get; }
    public List<ShardEntry> Shards { get; }
    public List<QuarantineEntry> Quarantine { get; }

    /// <summary>When the part was first started (kept across resumes) and when this run of it started.</summary>
    public DateTimeOffset Started { get; }
    public DateTimeOffset Resumed { get; }

    /// <param name="Started">Null in journals written before it was recorded.</param>
    internal sealed record Stored(TokenizeConfiguration Configuration, List<ShardEntry> Shards, List<QuarantineEntry> Quarantine,
        DateTimeOffset? Started = null, DateTimeOffset? Resumed = null);

    /// <summary>
    /// The journal of an interrupted run in <paramref name="directory"/>, or a new one. A journal is trusted only as far
    /// as it checks out: it must parse, be of this configuration, and list shards that cover the part from its first
    /// sample on without gaps, each a plain file name present with its size and SHA-256, each holding exactly one row
    /// per view of every sample it covers that was not quarantined; quarantine entries must name samples of the part,
    /// once each. Anything else is refused naming progress.json (delete it to start the part over).
    /// </summary>
    public static TokenizeJournal Open(string directory, TokenizeConfiguration configuration)
    {
        string path = Path.Combine(directory, TokenizeJob.ProgressFileName);
        var journal = new TokenizeJournal(directory, configuration, [], [], DateTimeOffset.UtcNow);
        if (File.Exists(path))
        {
            var stored = Parse(path);
            if (stored.Configuration != configuration)
                throw new InvalidOperationException($"{directory}: an interrupted run with another configuration is in this folder (see {TokenizeJob.ProgressFileName}); resume it with its own options or use a new folder");
            Check(path, directory, configuration, stored);
            journal = new TokenizeJournal(directory, configuration, stored.Shards, stored.Quarantine, stored.Started ?? File.GetLastWriteTimeUtc(path));
        }
        var listed = journal.Shards.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(directory))
        {
            string name = Path.GetFileName(file);
            if (AtomicFile.IsTemporaryName(name) || (name.EndsWith(".parquet", StringComparison.Ordinal) && !listed.Contains(name)))
                File.Delete(file);
        }
        return journal;
    }

    /// <summary>The journal as written: parsed and complete, not yet checked against the folder.</summary>
    internal static Stored Parse(string path)
    {
        Stored? stored;
        try
        {
            stored = JsonSerializer.Deserialize<Stored>(RegularFile.ReadAllText(path, ShardManifest.MaxManifestBytes), ShardManifest.Json);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or OverflowException)
        {
            throw new InvalidDataException($"{path}: not a tokenize journal ({e.Message}); delete it to start this part over", e);
        }
        if (stored?.Configuration is null || stored.Shards is null || stored.Quarantine is null || stored.Shards.Any(s => s is null))
            throw new InvalidDataException($"{path}: not a tokenize journal (no configuration, shards or quarantine list); delete it to start this part over");
        return stored;
    }

    private static void Check(string path, string directory, TokenizeConfiguration configuration, Stored stored)
    {
        var (first, end) = TokenizeJob.PartRange(configuration);
        var quarantined = new HashSet<int>();
        foreach (var entry in stored.Quarantine)
        {
            if (entry?.Path is null || entry.Reason is null || entry.Stage is null || entry.SampleIndex is not int index)
                throw new InvalidDataException($"{path}: a quarantine entry without its path, reason, stage or sample index");
            if (index < first || index >= end || !quarantined.Add(index))
                throw new InvalidDataException($"{path}: a quarantine entry for sample {index}, outside the part {first}..{end - 1} or listed twice");
        }
        long expectedStart = first;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var shard in stored.Shards)
        {
            if (shard is null || !PathNames.IsPlainFileName(shard.Name) || !names.Add(shard.Name))
                throw new InvalidDataException($"{path}: a shard entry without a plain file name of its own ('{shard?.Name}')");
            if (shard.FirstSample != expectedStart || shard.Samples < 1 || (long)shard.FirstSample + shard.Samples > end)
                throw new InvalidDataException($"{path}: shard {shard.Name} covers samples {shard.FirstSample}+{shard.Samples}, but the shards before it end at {expectedStart} and the part at {end}");
            expectedStart = shard.FirstSample + shard.Samples;
            int kept = shard.Samples - quarantined.Count(i => i >= shard.FirstSample && i < shard.FirstSample + shard.Samples);
            if (shard.Rows != (long)kept * configuration.Views)
                throw new InvalidDataException($"{path}: shard {shard.Name} lists {shard.Rows} rows, but {kept} samples at {configuration.Views} views make {(long)kept * configuration.Views}");
            var file = new FileInfo(Path.Combine(directory, shard.Name));
            if (!file.Exists || file.Length != shard.Bytes)
                throw new InvalidDataException($"{file.FullName}: listed as finished in {TokenizeJob.ProgressFileName} but {(file.Exists ? $"has {file.Length} bytes, not {shard.Bytes}" : "missing")}");
            // The shard goes into the manifest with this hash: it must be the file's.
            string sha = ModelIdentity.Sha256Of(file.FullName);
            if (sha != shard.Sha256)
                throw new InvalidDataException($"{file.FullName}: SHA-256 {sha} differs from the {shard.Sha256} of {TokenizeJob.ProgressFileName}: the shard changed since it was finished");
        }
        // Entries past the last shard are recorded only for a part that ends in refused samples, all of them.
        if (quarantined.Any(i => i >= expectedStart) && !TailComplete(quarantined, expectedStart, end))
            throw new InvalidDataException($"{path}: quarantine entries for samples past the last finished shard (which ends at {expectedStart})");
    }

    /// <summary>Whether every sample from <paramref name="from"/> to <paramref name="end"/> is quarantined (a tail the
    /// journal records without a shard).</summary>
    private static bool TailComplete(HashSet<int> quarantined, long from, int end)
    {
        for (long i = from; i < end; i++)
            if (!quarantined.Contains((int)i)) return false;
        return true;
    }

    public void Record(ShardEntry shard, IEnumerable<QuarantineEntry> quarantined)
    {
        Shards.Add(shard);
        Quarantine.AddRange(quarantined);
        Save();
    }

    /// <summary>Quarantine entries of samples past the last shard (a part that ends in refused images).</summary>
    public void RecordTail(IEnumerable<QuarantineEntry> quarantined)
    {
        Quarantine.AddRange(quarantined);
        Save();
    }

    public void Delete() => File.Delete(Path.Combine(directory, TokenizeJob.ProgressFileName));

    /// <summary>Writes the journal and the quarantine log as they stand (each atomically: a retry after an I/O error
    /// writes them whole again).</summary>
    internal void Save()
    {
        AtomicFile.WriteAllText(Path.Combine(directory, TokenizeJob.ProgressFileName),
            JsonSerializer.Serialize(new Stored(Configuration, Shards, Quarantine, Started, Resumed), ShardManifest.Json));
        AtomicFile.WriteAllText(Path.Combine(directory, QuarantineLog.FileName), string.Concat(Quarantine.Select(q => QuarantineLog.ToJsonLine(q) + "\n")));
    }
}
