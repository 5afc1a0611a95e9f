using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;
using MimFlow.Training.Benchmarks;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>
/// <c>bench train --world N</c>: the training step at 1 rank and at N ranks, each started by mpirun as a real job
/// would be (mpirun -np 1, mpirun -np N), each rank stepping on --batch/N images (weak scaling: the per-rank work
/// stays, the global batch grows with the ranks) with the machine's cores shared out evenly between the ranks. Scaling
/// efficiency = img/s at N ranks / (N × img/s at 1 rank); the time each step spends in the all-reduce is reported
/// beside it.
/// </summary>
internal static class BenchScaling
{
    /// <summary>Torch threads per rank, set for the ranks this bench starts (the cores shared out between the ranks).</summary>
    public const string ThreadsVariable = "MIMFLOW_THREADS_PER_RANK";

    public static string Json(TrainStepResult result) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["model"] = result.Model, ["world_size"] = result.WorldSize, ["backend"] = result.Backend, ["global_batch"] = result.BatchSize,
        ["compute_type"] = result.ComputeType, ["device"] = result.Device, ["images_per_second"] = result.ImagesPerSecond,
        ["step_ms"] = result.StepMilliseconds, ["allreduce_ms"] = result.AllReduceMilliseconds, ["allreduce_bytes"] = result.GradientBytes,
        // Algorithm bandwidth: the buffer over the time (NCCL's busbw multiplies it by 2(n−1)/n for a ring).
        ["allreduce_gb_per_s"] = result.AllReduceMilliseconds > 0 ? result.GradientBytes / (result.AllReduceMilliseconds / 1000) / 1e9 : null,
    });

    public static async Task<int> RunAsync(CliContext context, ParseResult parsed, int ranks, int batch, string? jsonPath, CancellationToken cancellationToken)
    {
        if (batch % ranks != 0) throw new UsageException($"--batch {batch} must be a multiple of --world {ranks}: each rank steps on --batch/--world images");
        string mpirun = Environment.GetEnvironmentVariable("MIMFLOW_MPIRUN") ?? "mpirun";
        int threads = Math.Max(1, Environment.ProcessorCount / ranks);
        var passed = PassedOptions(parsed);
        var rows = new List<JsonObject>();
        using var work = new TemporaryFolder();
        foreach (int world in new[] { 1, ranks })
        {
            string json = Path.Combine(work.Path, $"world-{world}.json");
            var start = new ProcessStartInfo(mpirun) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (string arg in (string[])["--oversubscribe", "--bind-to", "none", "-np", world.ToString(CultureInfo.InvariantCulture)]) start.ArgumentList.Add(arg);
            if (Environment.UserName == "root") start.ArgumentList.Add("--allow-run-as-root");
            foreach (string arg in SelfCommand()) start.ArgumentList.Add(arg);
            foreach (string arg in (string[])["bench", "train", .. passed, "--batch", (batch / ranks * world).ToString(CultureInfo.InvariantCulture), "--json", json])
                start.ArgumentList.Add(arg);
            start.Environment[ThreadsVariable] = threads.ToString(CultureInfo.InvariantCulture);
            context.Console.MarkupLineInterpolated($"mimflow: bench train at {world} rank(s), {batch / ranks} images and {threads} thread(s) per rank …");
            Process process;
            try
            {
                process = Process.Start(start)!;
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"bench train --world starts the ranks with {mpirun}, which could not be run ({e.Message}): install Open MPI (apt-get install openmpi-bin) or set MIMFLOW_MPIRUN", e);
            }
            using (process)
            {
                var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
                var error = process.StandardError.ReadToEndAsync(cancellationToken);
                await process.WaitForExitAsync(cancellationToken);
                if (process.ExitCode != 0 || !File.Exists(json))
                    throw new InvalidOperationException($"bench train at {world} rank(s) failed (exit {process.ExitCode}): {string.Join(" ", (await error).Split('\n').Where(l => l.Length > 0 && !l.StartsWith("---", StringComparison.Ordinal)).TakeLast(4))}");
                _ = await output;
            }
            rows.Add(JsonNode.Parse(File.ReadAllText(json))!.AsObject());
        }
        double single = rows[0]["images_per_second"]!.GetValue<double>(), many = rows[1]["images_per_second"]!.GetValue<double>();
        double efficiency = many / (ranks * single);
        var table = new Table().Title($"bench train --world {ranks}: {rows[0]["model"]}, {batch / ranks} images per rank, {rows[0]["device"]}, {Environment.ProcessorCount} cores")
            .AddColumns("ranks", "global batch", "img/s", "step ms", "all-reduce ms", "scaling efficiency");
        foreach (var row in rows)
            table.AddRow(row["world_size"]!.ToString(), row["global_batch"]!.ToString(), $"{row["images_per_second"]!.GetValue<double>():F1}",
                $"{row["step_ms"]!.GetValue<double>():F1}", $"{row["allreduce_ms"]!.GetValue<double>():F2}",
                row["world_size"]!.GetValue<int>() == 1 ? "1.00 (reference)" : $"{efficiency:F2}");
        context.Console.Write(table);
        context.Report($"{ranks} ranks: {many:F1} img/s vs {single:F1} at 1 rank, scaling efficiency {efficiency:F2}, all-reduce {rows[1]["allreduce_ms"]!.GetValue<double>():F1} ms per step");
        if (jsonPath is not null)
            AtomicFile.WriteAllText(jsonPath, new JsonObject
            {
                ["ranks"] = new JsonArray([.. rows.Select(r => (JsonNode)r.DeepClone())]), ["scaling_efficiency"] = efficiency,
                ["threads_per_rank"] = threads, ["cores"] = Environment.ProcessorCount,
            }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    /// <summary>The options the user gave to bench train, minus those the scaling run sets per world size.</summary>
    private static List<string> PassedOptions(ParseResult parsed)
    {
        var args = new List<string>();
        foreach (var child in parsed.CommandResult.Children.OfType<System.CommandLine.Parsing.OptionResult>())
        {
            string name = child.Option.Name;
            if (name is "--world" or "--batch" or "--json" or "--peer" or "--python" || child.Implicit) continue;
            args.Add(name);
            args.AddRange(child.Tokens.Select(t => t.Value));
        }
        return args;
    }

    /// <summary>How to start this same program: the apphost, or dotnet with the CLI's assembly.</summary>
    private static IEnumerable<string> SelfCommand()
    {
        string host = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(host) == "dotnet" ? [host, typeof(BenchScaling).Assembly.Location] : [host];
    }

    private sealed class TemporaryFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("mimflow-bench-world-").FullName;

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); }
            catch (IOException) { }
        }
    }
}
