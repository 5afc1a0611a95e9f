using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Cli.Reporting;
using MimFlow.Core.Status;
using MimFlow.Pipelines.State;
using MimFlow.Precompute.Tokenize;
using MimFlow.Training.Runs;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow status DIR</c>: how far a training run, a tokenize job or a pipeline run is, read from its folder.</summary>
internal static class StatusCommand
{
    public static Command Create(CliContext context)
    {
        var folder = new Argument<string>("DIR") { Description = "A run folder (pretrain, finetune, segment, train-tokenizer), a shard folder (tokenize, merge) or a pipeline run folder" };
        var json = new Option<bool>("--json") { Description = "Print the status as one JSON object" };
        var command = new Command("status", "What a run or a tokenize job has done, how far, since when, at what rate and ETA, its last checkpoint or journal entry, and whether a process works on it now");
        command.Arguments.Add(folder);
        command.Options.Add(json);
        command.SetAction(parsed =>
        {
            string path = parsed.GetRequiredValue(folder);
            if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"{path}: no such folder");
            var status = Read(path) ?? throw new InvalidDataException(
                $"{path}: not a run folder (no run.json, metrics.jsonl or latest.json), a shard folder (no manifest.json or progress.json) or a pipeline run folder");
            var now = context.Time.GetUtcNow();
            if (parsed.GetValue(json)) context.Console.Profile.Out.Writer.WriteLine(Json(status, now).ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            else Render(context.Console, status, now);
            return 0;
        });
        return command;
    }

    private static JobStatus? Read(string path) => RunStatus.Read(path) ?? TokenizeStatus.Read(path) ?? PipelineStatus.Read(path, Job);

    private static JobStatus? Job(string path) => RunStatus.Read(path) ?? TokenizeStatus.Read(path);

    private static void Render(IAnsiConsole console, JobStatus status, DateTimeOffset now, int level = 0)
    {
        string indent = new(' ', 2 * level);
        console.WriteLine($"{indent}{status.Kind} {status.Path}: {State(status)}");
        var table = new Table().HideHeaders().AddColumns("", "");
        void Row(string name, string? value)
        {
            if (!string.IsNullOrEmpty(value)) table.AddRow(new Text(indent + name), new Text(value));
        }
        Row("progress", status.Total > 0
            ? $"{Count(status.Done)}/{Count(status.Total)} {status.Unit} ({(100 * status.Done / status.Total).ToString("0.0", CultureInfo.InvariantCulture)}%)"
            : $"{Count(status.Done)} {status.Unit}");
        if (status.Started is { } started) Row("started", JobStatus.Stamp(started) + (status.Resumed is { } resumed ? $", resumed {JobStatus.Stamp(resumed)}" : ""));
        if (status.LastActivity is { } last) Row("last activity", $"{JobStatus.Stamp(last)} ({ProgressLog.Duration(now - last)} ago)");
        if (status.Rate is double rate) Row("rate", $"{rate.ToString(rate >= 10 ? "0.0" : "0.###", CultureInfo.InvariantCulture)} {status.Unit}/s");
        if (status.Eta is { } eta) Row("ETA", $"{ProgressLog.Duration(eta)} (about {JobStatus.Stamp(now + eta)})");
        Row(status.Kind switch { "tokenize" => "last journal entry", "run" or "parts" => "last stage", _ => "last checkpoint" }, status.LastDurablePoint);
        foreach (var (name, value) in status.Facts) Row(name, value);
        console.Write(table);
        foreach (var part in status.Parts) Render(console, part, now, level + 1);
    }

    private static string State(JobStatus status) => status.State switch
    {
        JobState.Running => status.Holder is { } h ? $"running (pid {h.Pid} on {h.Host}, {h.What}, since {JobStatus.Stamp(h.Since)})" : "running",
        JobState.Finished => "finished",
        _ => "stopped, not finished (the same command with --resume for training, as is for tokenize, continues it)",
    };

    private static JsonObject Json(JobStatus status, DateTimeOffset now)
    {
        var json = new JsonObject
        {
            ["kind"] = status.Kind,
            ["path"] = status.Path,
            ["state"] = status.State.ToString().ToLowerInvariant(),
            ["done"] = status.Done,
            ["total"] = status.Total > 0 ? status.Total : null,
            ["unit"] = status.Unit,
            ["started"] = status.Started?.ToString("O", CultureInfo.InvariantCulture),
            ["resumed"] = status.Resumed?.ToString("O", CultureInfo.InvariantCulture),
            ["last_activity"] = status.LastActivity?.ToString("O", CultureInfo.InvariantCulture),
            ["rate"] = status.Rate,
            ["eta_seconds"] = status.Eta?.TotalSeconds,
            ["last_durable_point"] = status.LastDurablePoint,
            ["holder"] = status.Holder is { } h ? new JsonObject { ["pid"] = h.Pid, ["host"] = h.Host, ["what"] = h.What, ["since"] = h.Since.ToString("O", CultureInfo.InvariantCulture) } : null,
            ["facts"] = new JsonObject(status.Facts.Select(f => KeyValuePair.Create(f.Key, (JsonNode?)f.Value))),
        };
        if (status.Parts.Count > 0) json["parts"] = new JsonArray(status.Parts.Select(p => (JsonNode)Json(p, now)).ToArray());
        return json;
    }

    private static string Count(double value) => value.ToString(value == Math.Floor(value) ? "N0" : "N2", CultureInfo.InvariantCulture);
}
