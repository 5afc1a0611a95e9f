using System.Globalization;
using MimFlow.Core.IO;
using MimFlow.Core.Status;

namespace MimFlow.Pipelines.State;

/// <summary>
/// The status of a folder that holds other jobs' folders: a pipeline run (its stage records: which stages finished
/// when and with what summary, which one started and has not finished) or a folder of parts (a data-parallel
/// tokenize's). Each job folder inside, to three levels down, is read with the reader given (a training run, a shard
/// set) and reported as a part.
/// </summary>
public static class PipelineStatus
{
    public const int Depth = 3;

    /// <summary>The status, or null when the folder is neither a pipeline run nor holds job folders.</summary>
    public static JobStatus? Read(string directory, Func<string, JobStatus?> readJob)
    {
        var records = new StageRecords(directory);
        var (finished, started) = records.All();
        var parts = Jobs(directory, readJob, Depth);
        bool pipeline = Directory.Exists(records.Directory);
        if (!pipeline && parts.Count == 0) return null;
        var holder = OutputLock.HolderOfFile(StageRecords.LockPath(directory));
        bool running = holder is not null || OutputLock.IsFileHeld(StageRecords.LockPath(directory)) || parts.Any(p => p.State == JobState.Running);
        var facts = new List<KeyValuePair<string, string>>();
        foreach (var stage in finished)
            facts.Add(new($"stage {stage.Stage}", $"done {JobStatus.Stamp(stage.FinishedUtc)} in {stage.Seconds.ToString("F1", CultureInfo.InvariantCulture)} s{(stage.Summary is { } s ? ": " + s : "")}"));
        foreach (var attempt in started)
            facts.Add(new($"stage {attempt.Stage}", $"started {JobStatus.Stamp(attempt.StartedUtc)}, not finished{(running ? "" : " (the same command resumes it)")}"));
        return new JobStatus
        {
            Kind = pipeline ? "run" : "parts",
            Path = Path.GetFullPath(directory),
            Holder = holder,
            State = running ? JobState.Running : started.Count > 0 || parts.Any(p => p.State == JobState.Stopped) ? JobState.Stopped : JobState.Finished,
            Done = pipeline ? finished.Count : parts.Count(p => p.State == JobState.Finished),
            Total = pipeline ? 0 : parts.Count,
            Unit = pipeline ? "stages" : "parts",
            Started = finished.Select(r => (DateTimeOffset?)(r.FinishedUtc - TimeSpan.FromSeconds(r.Seconds))).Concat(started.Select(a => (DateTimeOffset?)a.StartedUtc))
                .Concat(parts.Select(p => p.Started)).Where(t => t is not null).Min(),
            LastActivity = finished.Select(r => (DateTimeOffset?)r.FinishedUtc).Concat(parts.Select(p => p.LastActivity)).Where(t => t is not null).Max(),
            LastDurablePoint = finished.Count > 0 ? $"stage {finished[^1].Stage} finished {JobStatus.Stamp(finished[^1].FinishedUtc)}" : null,
            Facts = facts,
            Parts = parts,
        };
    }

    /// <summary>Job folders under <paramref name="directory"/> (not itself), a job's own folders not searched.</summary>
    private static List<JobStatus> Jobs(string directory, Func<string, JobStatus?> readJob, int depth)
    {
        var found = new List<JobStatus>();
        if (depth == 0) return found;
        foreach (string child in Directory.EnumerateDirectories(directory).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(child);
            // Hidden folders are MimFlow's own bookkeeping (.mimflow) or half-written checkpoints; links are not followed.
            if (name.StartsWith('.') || new DirectoryInfo(child).LinkTarget is not null) continue;
            if (readJob(child) is { } job) found.Add(job);
            else found.AddRange(Jobs(child, readJob, depth - 1));
        }
        return found;
    }

}
