using MimFlow.Core.Status;
using MimFlow.Cli.Reporting;
using System.CommandLine;
using System.Globalization;
using MimFlow.Models.Teachers;
using MimFlow.Shards;
using MimFlow.Training.Distributed;
using MimFlow.Precompute.Tokenize;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>The options of <c>mimflow tokenize</c>; only what the user typed is applied onto <see cref="TokenizeRequest"/>'s defaults.</summary>
internal sealed class TokenizeOptions
{
    private static readonly TokenizeRequest Defaults = new() { DataRoot = "", OutputDirectory = "" };

    public DataOptions Data { get; } = new();
    public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer model directory (vqkd-* or dvae): codes" };
    public Option<string?> Teacher { get; } = new("--teacher") { Description = "Teacher model directory (a ViT: clip-b16, dino-*): features" };
    public Option<int?> Views { get; } = new("--views") { Description = $"Augmented views per image, one row each (default {Defaults.Views})" };
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Seed of the augmentation draws (default 0)" };
    public Option<string> Output { get; } = new("--out") { Description = "Shard folder (part files, manifest.json, quarantine.jsonl)", Required = true };
    public Option<string?> Shard { get; } = new("--shard") { Description = "i/n: this machine's part of the dataset, contiguous and disjoint (default 0/1)" };
    public Option<string?> StoreImage { get; } = new("--store-image") { Description = $"Keep the source in the shards: max-side=S[,quality=Q] (JPEG; quality default {Defaults.StoreImageQuality})" };
    public Option<string?> Features { get; } = FinetuneOptions.NullableChoice("--features", "Teacher feature storage: fp16 (the default) or int8 (per-token scale)", "fp16", "int8");
    public DeviceOption Device { get; } = new();
    public Option<int?> Batch { get; } = new("--batch") { Description = $"Images per model batch (default {Defaults.BatchSize})" };
    public Option<int?> Workers { get; } = new("--workers") { Description = "Decode workers (default: the processor count)" };
    public Option<double?> ShardSize { get; } = new("--shard-mb") { Description = $"Target shard size in MB, cut between images (default {Defaults.TargetShardBytes >> 20})" };
    public Option<int?> RowGroup { get; } = new("--row-group-rows") { Description = $"Rows per Parquet row group (default {Defaults.RowGroupRows})" };
    public Option<int?> TeacherLayers { get; } = new("--teacher-layers") { Description = $"Mean of the teacher's last k layers, each through the final norm (default {Defaults.Teacher.LastLayers})" };
    public Option<bool> TeacherProject { get; } = new("--teacher-project") { Description = "Apply the teacher's head token-wise (CLIP's projection)" };

    public void AddTo(Command command)
    {
        Data.AddTo(command);
        foreach (var option in new Option[] { Tokenizer, Teacher, Views, Seed, Output, Shard, StoreImage, Features, Device.Option, Batch, Workers, ShardSize, RowGroup, TeacherLayers, TeacherProject })
            command.Options.Add(option);
    }

    public TokenizeRequest Request(ParseResult parsed)
    {
        var request = ApplyShared(parsed, new TokenizeRequest { DataRoot = parsed.GetRequiredValue(Data.Data), OutputDirectory = parsed.GetRequiredValue(Output) });
        request = request with
        {
            Teacher = request.Teacher with
            {
                LastLayers = parsed.GetValue(TeacherLayers) ?? request.Teacher.LastLayers, Project = parsed.GetValue(TeacherProject) || request.Teacher.Project,
            },
            FeatureEncoding = parsed.GetValue(Features) switch { "int8" => FeatureEncoding.Int8, "fp16" => FeatureEncoding.Fp16, _ => request.FeatureEncoding },
            Views = parsed.GetValue(Views) ?? request.Views, Seed = parsed.GetValue(Seed) ?? request.Seed,
            TargetShardBytes = parsed.GetValue(ShardSize) is double megabytes ? ShardBytes(megabytes) : request.TargetShardBytes,
            RowGroupRows = parsed.GetValue(RowGroup) ?? request.RowGroupRows,
        };
        if (parsed.GetValue(Shard) is { } shard)
        {
            var (index, count) = ParseShard(shard);
            request = request with { ShardIndex = index, ShardCount = count };
        }
        if (parsed.GetValue(StoreImage) is { } store)
        {
            var (maxSide, quality) = ParseStoreImage(store, request.StoreImageQuality);
            request = request with { StoreImageMaxSide = maxSide, StoreImageQuality = quality };
        }
        return request;
    }

    /// <summary>The options <c>bench tokenize</c> takes too (besides <see cref="Data"/>): the models, the batch, the workers and the device.</summary>
    public IEnumerable<Option> Shared => [Tokenizer, Teacher, Batch, Workers, Device.Option];

    /// <summary>The typed values of <see cref="Data"/> (but --data) and of <see cref="Shared"/> (but --device), applied onto <paramref name="request"/>.</summary>
    public TokenizeRequest ApplyShared(ParseResult parsed, TokenizeRequest request) => request with
    {
        Layout = Data.LayoutOf(parsed), Split = Data.SplitOrDefault(parsed) ?? request.Split, GroundTruth = Data.GroundTruthOf(parsed) ?? request.GroundTruth,
        TokenizerDirectory = parsed.GetValue(Tokenizer) ?? request.TokenizerDirectory, TeacherDirectory = parsed.GetValue(Teacher) ?? request.TeacherDirectory,
        BatchSize = parsed.GetValue(Batch) ?? request.BatchSize, DecodeWorkers = parsed.GetValue(Workers) ?? request.DecodeWorkers,
    };

    private static long ShardBytes(double megabytes) =>
        megabytes > 0 ? Math.Max(1, (long)(megabytes * 1024 * 1024)) : throw new MimFlow.Cli.UsageException($"--shard-mb must be positive (got {megabytes})");

    private static (int Index, int Count) ParseShard(string text)
    {
        string[] parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out int i) && int.TryParse(parts[1], CultureInfo.InvariantCulture, out int n) && n >= 1 && i >= 0 && i < n)
            return (i, n);
        throw new MimFlow.Cli.UsageException($"--shard '{text}': expected i/n with 0 ≤ i < n, e.g. 0/4");
    }

    private static (int MaxSide, int Quality) ParseStoreImage(string text, int defaultQuality)
    {
        int? side = null;
        int quality = defaultQuality;
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] pair = part.Split('=', 2);
            if (pair.Length == 2 && int.TryParse(pair[1], CultureInfo.InvariantCulture, out int value))
            {
                if (pair[0] == "max-side") { side = value; continue; }
                if (pair[0] == "quality") { quality = value; continue; }
            }
            throw new MimFlow.Cli.UsageException($"--store-image '{text}': expected max-side=S,quality=Q");
        }
        return (side ?? throw new MimFlow.Cli.UsageException($"--store-image '{text}': max-side=S is required"), quality);
    }
}

/// <summary><c>mimflow tokenize</c>: frozen tokenizer codes and/or teacher features of K pretraining views per image, into Parquet shards.</summary>
internal static class TokenizeCommand
{
    public static Command Create(CliContext context)
    {
        var options = new TokenizeOptions();
        var command = new Command("tokenize", "Pre-tokenize a dataset: K augmented views per image through a frozen tokenizer and/or teacher into Parquet shards; resumable, verifiable");
        options.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = options.Request(parsed);
            request.Validate();
            var launch = LaunchEnvironment.FromProcess();
            if (launch.IsDistributed)
            {
                if (parsed.GetValue(options.Shard) is not null)
                    throw new UsageException($"--shard: under a launcher ({launch}) each rank takes its part from its rank and world size; leave --shard out");
                return await DataParallelLaunch.RunAsync(parsed, options.Device.Resolve(parsed), (collective, device) =>
                    RunPartAsync(context, request with { Device = device }, collective, cancellationToken));
            }
            request = request with { Device = options.Device.Resolve(parsed) };
            var result = await Run(context, request, cancellationToken);
            Render(context.Console, request, result);
            var manifest = result.Manifest;
            context.Report(result.AlreadyComplete ? $"already complete: {manifest.Rows:N0} rows in {manifest.Shards.Count} shards"
                : $"{manifest.Rows:N0} rows ({manifest.Configuration.Views} views × {manifest.SampleCount - manifest.Quarantined} images), {manifest.Shards.Count} shards, {manifest.Quarantined} quarantined, {result.ImagesPerSecond:F0} img/s");
            return 0;
        });
        return command;
    }

    /// <summary>The folder rank r of n tokenizes into: OUT-parts/r-of-n, beside the merged set in OUT.</summary>
    public static string PartFolder(string output, int rank, int worldSize) =>
        Path.Combine(Path.TrimEndingDirectorySeparator(output) + "-parts", $"{rank}-of-{worldSize}");

    /// <summary>
    /// Under a launcher: rank r tokenizes part r/n (contiguous, disjoint) into its own folder; once every rank has
    /// finished (a collective), rank 0 merges the parts into --out, verified, as <c>shards merge</c> would.
    /// </summary>
    private static async Task<int> RunPartAsync(CliContext context, TokenizeRequest request, ICollective collective, CancellationToken cancellationToken)
    {
        var part = request with { ShardIndex = collective.Rank, ShardCount = collective.WorldSize, OutputDirectory = PartFolder(request.OutputDirectory, collective.Rank, collective.WorldSize) };
        var result = collective.Writes() ? await Run(context, part, cancellationToken) : await TokenizeJob.RunAsync(part, null, cancellationToken);
        var done = new double[collective.WorldSize];
        done[collective.Rank] = 1;
        collective.AllReduceSum(done, "tokenize parts finished");
        if (!collective.Writes()) return 0;
        var parts = Enumerable.Range(0, collective.WorldSize).Select(r => PartFolder(request.OutputDirectory, r, collective.WorldSize)).ToList();
        // A re-run after a finished merge (the scheduler restarted a completed job) finds every part complete and the set merged.
        var merged = File.Exists(Path.Combine(request.OutputDirectory, ShardManifest.FileName))
            ? ShardManifest.Read(request.OutputDirectory)
            : await ShardMerger.MergeAsync(parts, request.OutputDirectory, cancellationToken);
        context.Console.MarkupLineInterpolated($"{collective.WorldSize} ranks tokenized {parts.Count} parts; merged into {request.OutputDirectory}: {merged.Rows:N0} rows in {merged.Shards.Count} shards");
        context.Report($"{merged.Rows:N0} rows from {collective.WorldSize} ranks, merged; {merged.Quarantined} quarantined, rank 0 at {result.ImagesPerSecond:F0} img/s");
        return 0;
    }

    public static Task<TokenizeResult> Run(CliContext context, TokenizeRequest request, CancellationToken cancellationToken) =>
        CliProgress.RunAsync(context, "tokenize", "images", report => TokenizeJob.RunAsync(request, new ImmediateProgress<TokenizeProgress>(p => report(new ProgressReport(
            p.SamplesDone, p.SamplesTotal, new ProgressFigure("rows", p.Rows, "0"), new ProgressFigure("shards", p.Shards, "0"),
            new ProgressFigure("quarantined", p.Quarantined, "0")))), cancellationToken));

    public static void Render(IAnsiConsole console, TokenizeRequest request, TokenizeResult result)
    {
        var manifest = result.Manifest;
        if (result.AlreadyComplete)
        {
            console.MarkupLineInterpolated($"{request.OutputDirectory} already holds the finished set ({manifest.Rows:N0} rows in {manifest.Shards.Count} shards): nothing to do");
            return;
        }
        var table = new Table().AddColumns("", "");
        Row(table, "samples", $"{manifest.SampleCount:N0} (part {manifest.Configuration.ShardIndex}/{manifest.Configuration.ShardCount}, from sample {manifest.FirstSample:N0})");
        if (result.ResumedFromSample > manifest.FirstSample) Row(table, "resumed at", $"sample {result.ResumedFromSample:N0}");
        Row(table, "rows", $"{manifest.Rows:N0} ({manifest.Configuration.Views} view{(manifest.Configuration.Views == 1 ? "" : "s")} per image)");
        Row(table, "shards", $"{manifest.Shards.Count} ({manifest.Shards.Sum(s => s.Bytes) / 1048576.0:F1} MB, zstd)");
        Row(table, "quarantined", $"{manifest.Quarantined}");
        if (manifest.CodeLength > 0) Row(table, "codes", $"{manifest.CodeLength} per row, codebook {manifest.CodebookSize}");
        if (manifest.FeatureShape is { } shape) Row(table, "features", $"[{shape[0]}, {shape[1]}] {manifest.Columns.Features?.ToString().ToLowerInvariant()}");
        Row(table, "speed", $"{result.ImagesPerSecond:F1} img/s; model waited for input {result.InputWaitShare:P0} of the time ({manifest.Configuration.Arithmetic})");
        console.Write(table);
    }

    private static void Row(Table table, string name, string value) => table.AddRow(new Text(name), new Text(value));
}
