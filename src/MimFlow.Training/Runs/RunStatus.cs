using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;
using MimFlow.Core.Status;

namespace MimFlow.Training.Runs;

/// <summary>
/// The status of a training run folder (pretrain, train-tokenizer, finetune, segment) from what the run writes:
/// <c>run.json</c> (each start: command, planned steps, device), the tail of <c>metrics.jsonl</c> (the last step, its
/// loss and time; the rate over the recent lines of the current start), <c>latest.json</c> (the last checkpoint),
/// <c>eval.json</c> (the last evaluation) and the folder's lock (whether a process works on it now).
/// </summary>
public static class RunStatus
{
    /// <summary>Lines of metrics.jsonl the rate is measured over (the tail only is read: a long run's log is large).</summary>
    public const int RateWindow = 200;

    /// <summary>The run's status, or null when the folder is not a run folder.</summary>
    public static JobStatus? Read(string runDirectory)
    {
        bool record = File.Exists(Path.Combine(runDirectory, RunRecord.FileName));
        bool metrics = File.Exists(Path.Combine(runDirectory, MetricsLog.FileName));
        bool pointer = File.Exists(Path.Combine(runDirectory, CheckpointStore.LatestFileName));
        if (!record && !metrics && !pointer) return null;

        var starts = RunRecord.Read(runDirectory);
        var last = starts.LastOrDefault();
        DateTimeOffset? Time(JsonObject? start) => start?["time"]?.GetValue<string>() is string t ? DateTimeOffset.Parse(t, CultureInfo.InvariantCulture) : null;
        long total = last?["total_steps"]?.GetValue<long>() ?? 0;
        var lines = metrics ? MetricsLog.ReadTail(runDirectory, RateWindow) : [];
        var lastLine = lines.LastOrDefault();
        long done = lastLine?["step"]?.GetValue<long>() + 1 ?? 0;
        DateTimeOffset? LineTime(JsonObject line) => line["time"]?.GetValue<string>() is string t ? DateTimeOffset.Parse(t, CultureInfo.InvariantCulture) : null;

        // The rate of the current start only: a pause between an interruption and its resume is not training time.
        var resumed = Time(last);
        var recent = lines.Where(l => LineTime(l) is { } t && (resumed is null || t >= resumed)).ToList();
        double? rate = null;
        if (recent.Count >= 2 && LineTime(recent[0]) is { } from && LineTime(recent[^1]) is { } to && to > from)
            rate = (recent[^1]["step"]!.GetValue<long>() - recent[0]["step"]!.GetValue<long>()) / (to - from).TotalSeconds;

        var holder = OutputLock.Holder(runDirectory);
        bool running = holder is not null || OutputLock.IsHeld(runDirectory);
        var facts = new List<KeyValuePair<string, string>>();
        void Fact(string name, string? value)
        {
            if (!string.IsNullOrEmpty(value)) facts.Add(new(name, value));
        }
        if (lastLine is not null)
        {
            Fact("loss", Number(lines.LastOrDefault(l => l["loss"] is JsonValue)?["loss"]));
            Fact("lr", Number(lastLine["lr"]));
            Fact("images/s", Number(lastLine["images_per_second"], "0.0"));
            Fact("input wait", lastLine["input_wait"] is JsonValue wait ? wait.GetValue<double>().ToString("P0", CultureInfo.InvariantCulture) : null);
        }
        if (last is not null)
        {
            Fact("device", $"{last["device"]} ({last["compute_type"]}), {last["world_size"]} rank(s)");
            Fact("starts", starts.Count.ToString(CultureInfo.InvariantCulture));
        }
        Fact("last evaluation", LastEvaluation(runDirectory));

        string? checkpoint;
        try
        {
            checkpoint = new CheckpointStore(runDirectory).Latest() is { } folder
                ? $"step {CheckpointStore.ReadState(folder).Step} in {folder} ({JobStatus.Stamp(Directory.GetLastWriteTimeUtc(folder))})"
                : "none yet";
        }
        catch (Exception e) when (e is IOException or InvalidDataException or JsonException or UnauthorizedAccessException)
        {
            checkpoint = $"unreadable: {e.Message}";
        }

        return new JobStatus
        {
            Kind = last?["command"]?.GetValue<string>() ?? "training run",
            Path = Path.GetFullPath(runDirectory),
            Holder = holder,
            State = running ? JobState.Running : total > 0 && done >= total ? JobState.Finished : JobState.Stopped,
            Done = done,
            Total = total,
            Unit = "steps",
            Started = Time(starts.FirstOrDefault()),
            Resumed = starts.Count > 1 ? resumed : null,
            LastActivity = lastLine is null ? null : LineTime(lastLine),
            Rate = rate,
            LastDurablePoint = checkpoint,
            Facts = facts,
        };
    }

    private static string? Number(JsonNode? node, string format = "0.####") =>
        node is JsonValue value && value.TryGetValue(out double number) ? number.ToString(Math.Abs(number) is > 0 and < 1e-3 ? "0.###e0" : format, CultureInfo.InvariantCulture) : null;

    /// <summary>The last epoch of eval.json as <c>epoch 3: top1 0.5123, top5 …</c>.</summary>
    private static string? LastEvaluation(string runDirectory)
    {
        string path = Path.Combine(runDirectory, "eval.json");
        if (!File.Exists(path)) return null;
        try
        {
            if (JsonNode.Parse(RegularFile.ReadAllText(path, 64 << 20))?["epochs"] is not JsonArray { Count: > 0 } epochs || epochs[^1] is not JsonObject lastEpoch) return null;
            var figures = lastEpoch.Where(p => p.Key is not ("epoch" or "step" or "images" or "quarantined") && p.Value is JsonValue)
                .Select(p => $"{p.Key} {Number(p.Value)}");
            return $"epoch {lastEpoch["epoch"]}: {string.Join(", ", figures)}";
        }
        catch (Exception e) when (e is JsonException or IOException or InvalidOperationException)
        {
            return $"unreadable: {e.Message}";
        }
    }
}
