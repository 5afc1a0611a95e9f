using MimFlow.Core.IO;
using System.Diagnostics;
using System.Text;
using MimFlow.Pipelines.Definition;
using MimFlow.Pipelines.State;

namespace MimFlow.Pipelines.Execution;

public enum StageAction { Skip, Run, Resume }

/// <summary>How a command continues an attempt that did not finish.</summary>
/// <param name="Flag">Given to the command to continue (e.g. <c>--resume</c>) when <paramref name="Marker"/> exists in its <c>out</c> output.</param>
/// <param name="Native">The command continues by itself when run again with the same arguments (a journal).</param>
public sealed record ResumeRule(string? Flag, string? Marker, bool Native)
{
    /// <summary>The stage's outputs are cleared and it runs from the start.</summary>
    public static ResumeRule Restart { get; } = new(null, null, false);

    public static ResumeRule Continues { get; } = new(null, null, true);

    public static ResumeRule WithFlag(string flag, string marker) => new(flag, marker, false);
}

/// <summary>A stage with every path made absolute: what the executor turns into a command line.</summary>
public sealed record ResolvedStage(StageDefinition Stage, IReadOnlyDictionary<string, string> Inputs, IReadOnlyDictionary<string, string> Outputs, bool Resume)
{
    public IReadOnlyDictionary<string, StageParameter> Parameters => Stage.Parameters;
}

public sealed record StageOutcome(bool Succeeded, string? Summary, string? Error);

/// <summary>Runs commands: the CLI in-process, or a test double.</summary>
public interface IStageExecutor : ICommandCatalog
{
    ResumeRule ResumeRuleOf(string command);

    /// <summary>The command line the stage runs as, for the plan and the record.</summary>
    string CommandLine(ResolvedStage stage);

    Task<StageOutcome> RunAsync(ResolvedStage stage, CancellationToken cancellationToken);
}

/// <summary>Stage-by-stage news for a display.</summary>
public interface IPipelineObserver
{
    void Starting(int position, int count, StageReport plan);

    void Finished(StageReport report);
}

/// <param name="From">Run this stage and every stage that reads from it again, the rest as usual.</param>
/// <param name="Only">Run just this stage again; what it reads must be complete.</param>
public sealed record RunRequest(PipelineDefinition Pipeline, string OutputDirectory, string? From = null, string? Only = null, bool DryRun = false);

/// <param name="Action">What was (or, in a dry run, would be) done.</param>
/// <param name="Reason">Why, in words: "complete: outputs and inputs unchanged", "parameters or inputs changed", …</param>
public sealed record StageReport(string Stage, string Command, StageAction Action, string Reason, TimeSpan Elapsed, string? Summary,
    IReadOnlyList<string> Outputs, string CommandLine);

/// <param name="Error">Why the run stopped at <paramref name="FailedStage"/>, or null when every stage completed.</param>
public sealed record PipelineRunResult(IReadOnlyList<StageReport> Stages, string? FailedStage, string? Error)
{
    public bool Succeeded => FailedStage is null;
}

/// <summary>
/// Runs a pipeline's stages in dependency order inside one run folder. A stage is skipped when its record's key (command,
/// parameters, input fingerprints, output paths) matches and its outputs still hold what it wrote; an attempt that did
/// not finish under the same key resumes where its command can, otherwise its outputs are cleared and it runs again.
/// The first failing stage stops the run; its attempt stays marked so the next run resumes it.
/// </summary>
public sealed class PipelineRunner(IStageExecutor executor, IPipelineObserver? observer = null)
{
    public async Task<PipelineRunResult> RunAsync(RunRequest request, CancellationToken cancellationToken = default)
    {
        var pipeline = request.Pipeline;
        string root = Path.GetFullPath(request.OutputDirectory);
        var records = new StageRecords(root);
        using var runLock = request.DryRun ? null : Lock(pipeline, root);
        var order = PipelineOrder.Of(pipeline);
        var (selected, forced) = Select(pipeline, order, request);
        var reports = new List<StageReport>();
        var scheduled = new HashSet<string>(StringComparer.Ordinal);
        // An external dataset is listed once per run, not once per stage that reads it (ImageNet: 1.3 M files).
        var externalFingerprints = new Dictionary<string, string?>(StringComparer.Ordinal);
        int position = 0;
        foreach (var stage in order.Where(s => selected.Contains(s.Name)))
        {
            cancellationToken.ThrowIfCancellationRequested();
            position++;
            string? pendingUpstream = request.DryRun ? stage.Upstream.FirstOrDefault(scheduled.Contains) : null;
            var (action, reason, key) = pendingUpstream is not null
                ? (StageAction.Run, $"after '{pendingUpstream}' runs", null)
                : Decide(pipeline, stage, root, records, forced.Contains(stage.Name), externalFingerprints);
            var resolved = Resolve(pipeline, stage, root, action == StageAction.Resume);
            var outputs = stage.Outputs.Values.Select(o => Path.Combine(root, o)).ToList();
            var plan = new StageReport(stage.Name, stage.Command, action, reason, TimeSpan.Zero, null, outputs, executor.CommandLine(resolved));
            if (action != StageAction.Skip) scheduled.Add(stage.Name);
            if (request.DryRun || action == StageAction.Skip)
            {
                var skipped = action == StageAction.Skip ? plan with { Summary = records.Finished(stage.Name)?.Summary } : plan;
                reports.Add(skipped);
                if (!request.DryRun) observer?.Finished(skipped);
                continue;
            }

            observer?.Starting(position, selected.Count, plan);
            var watch = Stopwatch.StartNew();
            records.Start(stage.Name, key!);
            if (action == StageAction.Run) Clear(resolved.Outputs.Values);
            var outcome = await executor.RunAsync(resolved, cancellationToken);
            var report = plan with { Elapsed = watch.Elapsed, Summary = outcome.Summary };
            if (!outcome.Succeeded)
            {
                reports.Add(report);
                observer?.Finished(report);
                return new PipelineRunResult(reports, stage.Name, $"stage '{stage.Name}' (mimflow {stage.Command}) failed: {outcome.Error ?? "see above"}; run the pipeline again to resume it");
            }
            var fingerprints = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (name, path) in resolved.Outputs)
                fingerprints[name] = PathFingerprint.Of(path)
                    ?? throw new PipelineException(pipeline.Source, $"stage '{stage.Name}': 'mimflow {stage.Command}' succeeded but wrote nothing at its output '{name}' ({path})");
            records.Finish(new StageRecord(stage.Name, stage.Command, key!, plan.CommandLine, fingerprints, DateTimeOffset.UtcNow, watch.Elapsed.TotalSeconds, outcome.Summary));
            reports.Add(report);
            observer?.Finished(report);
        }
        return new PipelineRunResult(reports, null, null);
    }

    private static (HashSet<string> Selected, HashSet<string> Forced) Select(PipelineDefinition pipeline, IReadOnlyList<StageDefinition> order, RunRequest request)
    {
        if (request.From is not null && request.Only is not null) throw new PipelineException(pipeline.Source, "--from and --only do not go together");
        var all = order.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        if (request.Only is { } only)
        {
            pipeline.Stage(only);
            return ([only], [only]);
        }
        if (request.From is { } from)
        {
            pipeline.Stage(from);
            var forced = PipelineOrder.Downstream(pipeline, from).Append(from).ToHashSet(StringComparer.Ordinal);
            return (all, forced);
        }
        return (all, []);
    }

    private (StageAction, string, string) Decide(PipelineDefinition pipeline, StageDefinition stage, string root, StageRecords records, bool forced,
        Dictionary<string, string?> externalFingerprints)
    {
        string key = Key(pipeline, stage, records, externalFingerprints);
        if (forced) return (StageAction.Run, "asked for (--from/--only)", key);
        var record = records.Finished(stage.Name);
        if (record is not null && record.Key == key)
        {
            var changed = stage.Outputs.Where(o => PathFingerprint.Of(Path.Combine(root, o.Value)) != record.Outputs.GetValueOrDefault(o.Key)).Select(o => o.Key).ToList();
            return changed.Count == 0
                ? (StageAction.Skip, "complete: outputs and inputs unchanged", key)
                : (StageAction.Run, $"output {string.Join(", ", changed)} changed on disk since it finished", key);
        }
        if (record is not null) return (StageAction.Run, "its parameters or inputs changed", key);
        var attempt = records.Started(stage.Name);
        bool leftovers = stage.Outputs.Values.Any(o => Path.Exists(Path.Combine(root, o)));
        if (attempt is null || !leftovers) return (StageAction.Run, "not run yet", key);
        if (attempt.Key != key) return (StageAction.Run, "an unfinished attempt with other parameters or inputs: starts again", key);
        var rule = executor.ResumeRuleOf(stage.Command);
        bool resumable = rule.Native
            || (rule.Flag is not null && rule.Marker is not null && stage.Outputs.TryGetValue("out", out string? main) && Path.Exists(Path.Combine(root, main, rule.Marker)));
        return resumable
            ? (StageAction.Resume, $"unfinished since {attempt.StartedUtc:u}: resumes", key)
            : (StageAction.Run, $"unfinished since {attempt.StartedUtc:u}: starts again (nothing to resume from)", key);
    }

    /// <summary>The stage's identity: when any part changes, its earlier result no longer counts.</summary>
    private static string Key(PipelineDefinition pipeline, StageDefinition stage, StageRecords records, Dictionary<string, string?> externalFingerprints)
    {
        var text = new StringBuilder().Append("command\t").Append(stage.Command).Append('\n');
        foreach (var (name, value) in stage.Parameters.OrderBy(p => p.Key, StringComparer.Ordinal))
            text.Append("parameter\t").Append(name).Append('\t').Append(value).Append('\n');
        foreach (var (name, input) in stage.Inputs.OrderBy(p => p.Key, StringComparer.Ordinal))
            text.Append("input\t").Append(name).Append('\t').Append(InputFingerprint(pipeline, stage, name, input, records, externalFingerprints)).Append('\n');
        foreach (var (name, path) in stage.Outputs.OrderBy(p => p.Key, StringComparer.Ordinal))
            text.Append("output\t").Append(name).Append('\t').Append(path).Append('\n');
        return PathFingerprint.Hash(text.ToString());
    }

    private static string InputFingerprint(PipelineDefinition pipeline, StageDefinition stage, string name, StageInput input, StageRecords records,
        Dictionary<string, string?> externalFingerprints)
    {
        if (input.ExternalPath is { } external)
        {
            string path = Path.GetFullPath(external);
            if (!externalFingerprints.TryGetValue(path, out string? fingerprint)) externalFingerprints[path] = fingerprint = PathFingerprint.Of(path);
            return fingerprint
                ?? throw new PipelineException(pipeline.Source, $"stage '{stage.Name}': missing input: '{name}' is {Path.GetFullPath(external)}, which does not exist");
        }
        var upstream = records.Finished(input.Stage!)
            ?? throw new PipelineException(pipeline.Source, $"stage '{stage.Name}' reads {input}, but stage '{input.Stage}' has not finished in this run folder (run it first, or use --from {input.Stage})");
        return upstream.Outputs[input.Output!] + "/" + input.SubPath;
    }

    private static ResolvedStage Resolve(PipelineDefinition pipeline, StageDefinition stage, string root, bool resume)
    {
        var inputs = stage.Inputs.ToDictionary(i => i.Key, i => i.Value.ExternalPath is { } external
            ? Path.GetFullPath(external)
            : Path.Combine(root, pipeline.Stage(i.Value.Stage!).Outputs[i.Value.Output!], i.Value.SubPath), StringComparer.Ordinal);
        var outputs = stage.Outputs.ToDictionary(o => o.Key, o => Path.Combine(root, o.Value), StringComparer.Ordinal);
        return new ResolvedStage(stage, inputs, outputs, resume);
    }

    /// <summary>One run per folder at a time: a second would race the first over the same outputs and records.</summary>
    private static OutputLock Lock(PipelineDefinition pipeline, string root)
    {
        try
        {
            return OutputLock.AcquireFile(StageRecords.LockPath(root), "run " + pipeline.Name, root);
        }
        catch (OutputInUseException e)
        {
            throw new PipelineException(pipeline.Source, $"another mimflow run is using the run folder {root}: {e.Message}");
        }
    }

    private static void Clear(IEnumerable<string> outputs)
    {
        foreach (string path in outputs)
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else if (File.Exists(path)) File.Delete(path);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        }
    }
}
