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

    private TokenizeJournal(string directory, TokenizeConfiguration configuration, List<ShardEntry> shards, List<QuarantineEntry> quarantine)
    {
        this.directory = directory;
        Configuration = configuration;
        Shards = shards;
        Quarantine = quarantine;
    }

    public TokenizeConfiguration Configuration { get; }
    public List<ShardEntry> Shards { get; }
    public List<QuarantineEntry> Quarantine { get; }

    private sealed record Stored(TokenizeConfiguration Configuration, List<ShardEntry> Shards, List<QuarantineEntry> Quarantine);

    public static TokenizeJournal Open(string directory, TokenizeConfiguration configuration)
    {
        string path = Path.Combine(directory, TokenizeJob.ProgressFileName);
        var journal = new TokenizeJournal(directory, configuration, [], []);
        if (File.Exists(path))
        {
            var stored = JsonSerializer.Deserialize<Stored>(File.ReadAllText(path), ShardManifest.Json)
                ?? throw new InvalidDataException($"{path}: empty progress file");
            if (stored.Configuration != configuration)
                throw new InvalidOperationException($"{directory}: an interrupted run with another configuration is in this folder (see {TokenizeJob.ProgressFileName}); resume it with its own options or use a new folder");
            foreach (var shard in stored.Shards)
            {
                var file = new FileInfo(Path.Combine(directory, shard.Name));
                if (!file.Exists || file.Length != shard.Bytes)
                    throw new InvalidDataException($"{file.FullName}: listed as finished in {TokenizeJob.ProgressFileName} but {(file.Exists ? $"has {file.Length} bytes, not {shard.Bytes}" : "missing")}");
            }
            journal = new TokenizeJournal(directory, configuration, stored.Shards, stored.Quarantine);
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
            JsonSerializer.Serialize(new Stored(Configuration, Shards, Quarantine), ShardManifest.Json));
        AtomicFile.WriteAllText(Path.Combine(directory, QuarantineLog.FileName), string.Concat(Quarantine.Select(q => QuarantineLog.ToJsonLine(q) + "\n")));
    }
}
