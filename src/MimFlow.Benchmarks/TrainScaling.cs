using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Training.Benchmarks;

namespace MimFlow.Benchmarks;

/// <summary>What <c>bench train --world N</c> runs: the training step at 1 rank and at N ranks, each a real mpirun job.</summary>
/// <param name="Program">How to start mimflow itself (the apphost, or dotnet and the CLI's assembly).</param>
/// <param name="Arguments">The bench train options to pass on (not --batch or --json, which are set per world size).</param>
public sealed record TrainScalingRequest(int Ranks, int BatchPerRank, IReadOnlyList<string> Program, IReadOnlyList<string> Arguments)
{
    public string MpiRun { get; init; } = Environment.GetEnvironmentVariable("MIMFLOW_MPIRUN") ?? "mpirun";

    /// <summary>Torch threads per rank: the machine's cores shared out evenly between the ranks.</summary>
    public int ThreadsPerRank => Math.Max(1, Environment.ProcessorCount / Ranks);
}

/// <param name="Rows">Each world size's figures, as <see cref="TrainScaling.RankJson"/> wrote them.</param>
public sealed record TrainScalingResult(TrainScalingRequest Request, IReadOnlyList<JsonObject> Rows)
{
    public double Efficiency => Rows[1]["images_per_second"]!.GetValue<double>() / (Request.Ranks * Rows[0]["images_per_second"]!.GetValue<double>());

    public string ToJson() => new JsonObject
    {
        ["ranks"] = new JsonArray([.. Rows.Select(r => (JsonNode)r.DeepClone())]), ["scaling_efficiency"] = Efficiency,
        ["threads_per_rank"] = Request.ThreadsPerRank, ["cores"] = Environment.ProcessorCount,
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>
/// Weak scaling of the training step: each rank steps on the same number of images at 1 and at N ranks (the global
/// batch grows with the ranks), the cores shared out evenly. Scaling efficiency = img/s at N ranks / (N × img/s at 1
/// rank); the time each step spends in the all-reduce is reported beside it.
/// </summary>
public static class TrainScaling
{
    /// <summary>Torch threads per rank, set for the ranks this bench starts.</summary>
    public const string ThreadsVariable = "MIMFLOW_THREADS_PER_RANK";

    /// <summary>What one rank-0 process of a scaling run writes with --json.</summary>
    public static string RankJson(TrainStepResult result) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["model"] = result.Model, ["world_size"] = result.WorldSize, ["backend"] = result.Backend, ["global_batch"] = result.BatchSize,
        ["compute_type"] = result.ComputeType, ["device"] = result.Device, ["images_per_second"] = result.ImagesPerSecond,
        ["step_ms"] = result.StepMilliseconds, ["allreduce_ms"] = result.AllReduceMilliseconds, ["allreduce_bytes"] = result.GradientBytes,
        // Algorithm bandwidth: the buffer over the time (NCCL's busbw multiplies it by 2(n−1)/n for a ring).
        ["allreduce_gb_per_s"] = result.AllReduceMilliseconds > 0 ? result.GradientBytes / (result.AllReduceMilliseconds / 1000) / 1e9 : null,
    });

    public static async Task<TrainScalingResult> RunAsync(TrainScalingRequest request, Action<string>? say = null, CancellationToken cancellationToken = default)
    {
        var rows = new List<JsonObject>();
        string work = Directory.CreateTempSubdirectory("mimflow-bench-world-").FullName;
        try
        {
            foreach (int world in new[] { 1, request.Ranks })
            {
                string json = Path.Combine(work, $"world-{world}.json");
                var start = new ProcessStartInfo(request.MpiRun) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
                foreach (string arg in (string[])["--oversubscribe", "--bind-to", "none", "-np", world.ToString(CultureInfo.InvariantCulture)]) start.ArgumentList.Add(arg);
                if (Environment.UserName == "root") start.ArgumentList.Add("--allow-run-as-root");
                foreach (string arg in request.Program) start.ArgumentList.Add(arg);
                foreach (string arg in (string[])["bench", "train", .. request.Arguments, "--batch", (request.BatchPerRank * world).ToString(CultureInfo.InvariantCulture), "--json", json])
                    start.ArgumentList.Add(arg);
                start.Environment[ThreadsVariable] = request.ThreadsPerRank.ToString(CultureInfo.InvariantCulture);
                say?.Invoke($"mimflow: bench train at {world} rank(s), {request.BatchPerRank} images and {request.ThreadsPerRank} thread(s) per rank …");
                Process process;
                try
                {
                    process = Process.Start(start)!;
                }
                catch (System.ComponentModel.Win32Exception e)
                {
                    throw new InvalidOperationException($"bench train --world starts the ranks with {request.MpiRun}, which could not be run ({e.Message}): install Open MPI (apt-get install openmpi-bin) or set MIMFLOW_MPIRUN", e);
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
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); }
            catch (IOException) { }
        }
        return new TrainScalingResult(request, rows);
    }
}
