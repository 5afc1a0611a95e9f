using System.CommandLine;
using System.Globalization;
using MimFlow.Models.Teachers;
using MimFlow.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Torch.Backend;
using Spectre.Console;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow tokenize</c>: frozen tokenizer codes and/or teacher features of K pretraining views per image, into Parquet shards.</summary>
internal static class TokenizeCommand
{
    public static Command Create(CliContext context)
    {
        var data = new DataOptions();
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer model directory (vqkd-* or dvae): codes" };
        var teacher = new Option<string?>("--teacher") { Description = "Teacher model directory (a ViT: clip-b16, dino-*): features" };
        var views = new Option<int>("--views") { Description = "Augmented views per image (one row each)", DefaultValueFactory = _ => 1 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the augmentation draws", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Shard folder (part files, manifest.json, quarantine.jsonl)", Required = true };
        var shard = new Option<string>("--shard") { Description = "i/n: this machine's part of the dataset (contiguous, disjoint)", DefaultValueFactory = _ => "0/1" };
        var storeImage = new Option<string?>("--store-image") { Description = "Keep the source in the shards: max-side=S,quality=Q (JPEG)" };
        var features = new Option<string>("--features") { Description = "Teacher feature storage: fp16 or int8 (per-token scale)", DefaultValueFactory = _ => "fp16" };
        features.AcceptOnlyFromAmong("fp16", "int8");
        var device = new Option<string>("--device") { Description = "cpu or cuda (cuda needs MIMFLOW_LIBTORCH / --libtorch)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var batch = new Option<int>("--batch") { Description = "Images per model batch", DefaultValueFactory = _ => 64 };
        var workers = new Option<int>("--workers") { Description = "Decode workers", DefaultValueFactory = _ => Environment.ProcessorCount };
        var shardSize = new Option<double>("--shard-mb") { Description = "Target shard size in MB (cut between images)", DefaultValueFactory = _ => 256 };
        var rowGroup = new Option<int>("--row-group-rows") { Description = "Rows per Parquet row group", DefaultValueFactory = _ => 256 };
        var teacherLayers = new Option<int>("--teacher-layers") { Description = "Mean of the teacher's last k layers (each through the final norm)", DefaultValueFactory = _ => 1 };
        var teacherProject = new Option<bool>("--teacher-project") { Description = "Apply the teacher's head token-wise (CLIP's projection)" };
        var command = new Command("tokenize", "Pre-tokenize a dataset: K augmented views per image through a frozen tokenizer and/or teacher into Parquet shards; resumable, verifiable");
        data.AddTo(command);
        foreach (var option in new Option[] { tokenizer, teacher, views, seed, output, shard, storeImage, features, device, batch, workers, shardSize, rowGroup, teacherLayers, teacherProject })
            command.Options.Add(option);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var (index, count) = ParseShard(parsed.GetValue(shard)!);
            var (maxSide, quality) = ParseStoreImage(parsed.GetValue(storeImage));
            bool cuda = parsed.GetValue(device) == "cuda";
            if (cuda && backend.DefaultDevice.type != DeviceType.CUDA)
                throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch); this process runs the CPU build");
            var request = new TokenizeRequest
            {
                DataRoot = parsed.GetRequiredValue(data.Data), Layout = data.LayoutOf(parsed), Split = data.SplitOf(parsed), GroundTruth = data.GroundTruthOf(parsed),
                TokenizerDirectory = parsed.GetValue(tokenizer), TeacherDirectory = parsed.GetValue(teacher),
                Teacher = new TeacherOptions(parsed.GetValue(teacherLayers), parsed.GetValue(teacherProject)),
                FeatureEncoding = parsed.GetValue(features) == "int8" ? FeatureEncoding.Int8 : FeatureEncoding.Fp16,
                Views = parsed.GetValue(views), Seed = parsed.GetValue(seed), OutputDirectory = parsed.GetRequiredValue(output),
                ShardIndex = index, ShardCount = count, StoreImageMaxSide = maxSide, StoreImageQuality = quality,
                BatchSize = parsed.GetValue(batch), DecodeWorkers = parsed.GetValue(workers),
                TargetShardBytes = (long)(parsed.GetValue(shardSize) * 1024 * 1024), RowGroupRows = parsed.GetValue(rowGroup),
                Device = cuda ? backend.DefaultDevice : torch.CPU,
            };
            var result = await Run(context.Console, request, cancellationToken);
            Render(context.Console, request, result);
            var manifest = result.Manifest;
            context.Report(result.AlreadyComplete ? $"already complete: {manifest.Rows:N0} rows in {manifest.Shards.Count} shards"
                : $"{manifest.Rows:N0} rows ({manifest.Configuration.Views} views × {manifest.SampleCount - manifest.Quarantined} images), {manifest.Shards.Count} shards, {manifest.Quarantined} quarantined, {result.ImagesPerSecond:F0} img/s");
            return 0;
        });
        return command;
    }

    public static Task<TokenizeResult> Run(IAnsiConsole console, TokenizeRequest request, CancellationToken cancellationToken) =>
        CliProgress.RunAsync(console, "tokenize", 1, task => TokenizeJob.RunAsync(request, new Progress<TokenizeProgress>(p =>
        {
            task.MaxValue = Math.Max(1, p.SamplesTotal);
            task.Value = Math.Min(task.MaxValue, p.SamplesDone);
            task.Description = $"tokenize {p.Rows:N0} rows, {p.Shards} shards, {p.Quarantined} quarantined";
        }), cancellationToken));

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

    private static (int Index, int Count) ParseShard(string text)
    {
        string[] parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out int i) && int.TryParse(parts[1], CultureInfo.InvariantCulture, out int n) && n >= 1 && i >= 0 && i < n)
            return (i, n);
        throw new ArgumentException($"--shard '{text}': expected i/n with 0 ≤ i < n, e.g. 0/4");
    }

    private static (int? MaxSide, int Quality) ParseStoreImage(string? text)
    {
        if (text is null) return (null, 90);
        int? side = null;
        int quality = 90;
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] pair = part.Split('=', 2);
            if (pair.Length == 2 && int.TryParse(pair[1], CultureInfo.InvariantCulture, out int value))
            {
                if (pair[0] == "max-side") { side = value; continue; }
                if (pair[0] == "quality") { quality = value; continue; }
            }
            throw new ArgumentException($"--store-image '{text}': expected max-side=S,quality=Q");
        }
        return (side ?? throw new ArgumentException($"--store-image '{text}': max-side=S is required"), quality);
    }
}
