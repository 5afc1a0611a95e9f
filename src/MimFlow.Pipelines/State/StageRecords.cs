using System.Text.Json;
using MimFlow.Core.IO;

namespace MimFlow.Pipelines.State;

/// <summary>A stage that finished: the key it ran under and what its outputs held when it did.</summary>
/// <param name="Key">Hash of the command, parameters, input fingerprints and output paths.</param>
/// <param name="CommandLine">The command as it ran, for people.</param>
/// <param name="Outputs">Output name → fingerprint of what the stage wrote there.</param>
public sealed record StageRecord(string Stage, string Command, string Key, string CommandLine, IReadOnlyDictionary<string, string> Outputs,
    DateTimeOffset FinishedUtc, double Seconds, string? Summary);

/// <summary>A stage that started under a key and has not finished (failed or interrupted): its outputs may be resumed.</summary>
public sealed record StageAttempt(string Stage, string Key, DateTimeOffset StartedUtc);

/// <summary>
/// The run folder's memory of its stages, under <c>.mimflow/stages/</c>: <c>STAGE.json</c> for a finished stage,
/// <c>STAGE.started.json</c> while one runs. Both are written atomically, the record only after the command succeeded
/// and its outputs were fingerprinted, so a record always describes complete outputs.
/// </summary>
public sealed class StageRecords(string runDirectory)
{
    public const string Folder = ".mimflow";
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string Directory { get; } = Path.Combine(runDirectory, Folder, "stages");

    /// <summary>The lock a pipeline run holds on its run folder.</summary>
    public static string LockPath(string runDirectory) => Path.Combine(runDirectory, Folder, "run.lock");

    /// <summary>Every stage record and attempt in the folder, oldest first.</summary>
    public (IReadOnlyList<StageRecord> Finished, IReadOnlyList<StageAttempt> Started) All()
    {
        if (!System.IO.Directory.Exists(Directory)) return ([], []);
        var files = System.IO.Directory.EnumerateFiles(Directory, "*.json").Order(StringComparer.Ordinal).ToList();
        var started = files.Where(f => f.EndsWith(".started.json", StringComparison.Ordinal)).Select(Read<StageAttempt>).OfType<StageAttempt>().OrderBy(a => a.StartedUtc).ToList();
        var finished = files.Where(f => !f.EndsWith(".started.json", StringComparison.Ordinal)).Select(Read<StageRecord>).OfType<StageRecord>().OrderBy(r => r.FinishedUtc).ToList();
        return (finished, started);
    }

    public StageRecord? Finished(string stage) => Read<StageRecord>(RecordPath(stage));

    public StageAttempt? Started(string stage) => Read<StageAttempt>(AttemptPath(stage));

    /// <summary>Forgets the stage's last result, then marks the attempt: from here a crash leaves an attempt, never a stale record.</summary>
    public void Start(string stage, string key)
    {
        System.IO.Directory.CreateDirectory(Directory);
        File.Delete(RecordPath(stage));
        AtomicFile.WriteAllText(AttemptPath(stage), JsonSerializer.Serialize(new StageAttempt(stage, key, DateTimeOffset.UtcNow), Json));
    }

    public void Finish(StageRecord record)
    {
        AtomicFile.WriteAllText(RecordPath(record.Stage), JsonSerializer.Serialize(record, Json));
        File.Delete(AttemptPath(record.Stage));
    }

    private string RecordPath(string stage) => Path.Combine(Directory, stage + ".json");

    private string AttemptPath(string stage) => Path.Combine(Directory, stage + ".started.json");

    private static T? Read<T>(string path) where T : class
    {
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a stage record ({e.Message}); delete it to run the stage again", e); }
    }
}
