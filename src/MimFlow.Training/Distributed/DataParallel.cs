using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MimFlow.Core.IO;
using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>
/// What every data-parallel trainer does besides the step: refuse ranks started with different options, check that the
/// replicas' weights are one and the same at each checkpoint, and say which rank writes (rank 0 alone writes metrics,
/// checkpoints and plots).
/// </summary>
public static class DataParallel
{
    /// <summary>The file rank 0 appends one line to per checkpoint: step, world size and the flat parameters' SHA-256, agreed by every rank.</summary>
    public const string ReplicasFileName = "replicas.jsonl";

    public static bool Writes(this ICollective collective) => collective.Rank == 0;

    /// <summary>
    /// Every rank hashes its resolved options (the description) and learns rank 0's hash and which ranks differ; a
    /// mismatch fails every rank at start, naming them, before any data is read.
    /// </summary>
    public static void VerifySameOptions(ICollective collective, string command, string description)
    {
        if (collective.WorldSize == 1) return;
        byte[] mine = SHA256.HashData(Encoding.UTF8.GetBytes(description));
        byte[] root = (byte[])mine.Clone();
        collective.Broadcast(root, 0, $"{command} options");
        var differing = new double[collective.WorldSize];
        if (!mine.AsSpan().SequenceEqual(root)) differing[collective.Rank] = 1;
        collective.AllReduceSum(differing, $"{command} options check");
        var ranks = Enumerable.Range(0, collective.WorldSize).Where(r => differing[r] != 0).ToList();
        if (ranks.Count > 0)
            throw new ArgumentException($"{command}: rank{(ranks.Count > 1 ? "s" : "")} {string.Join(", ", ranks)} resolved other options than rank 0 " +
                                        $"(rank {collective.Rank}: {description}); every rank must run the same command line");
    }

    /// <summary>
    /// The flat parameter buffer's SHA-256 on every rank, compared with rank 0's: replicas that drifted apart (a rank
    /// that skipped a step, a non-deterministic reduction) end the run at the checkpoint that found it. Rank 0 appends
    /// the agreed digest to <see cref="ReplicasFileName"/>.
    /// </summary>
    public static string VerifyReplicas(ICollective collective, Tensor flatParameters, long step, string runDirectory)
    {
        byte[] digest;
        using (var host = flatParameters.detach().cpu().contiguous())
            digest = SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host.data<float>().ToArray().AsSpan()));
        string hex = Convert.ToHexStringLower(digest);
        if (collective.WorldSize > 1)
        {
            byte[] root = (byte[])digest.Clone();
            collective.Broadcast(root, 0, $"replica digest at step {step}");
            var differing = new double[collective.WorldSize];
            if (!digest.AsSpan().SequenceEqual(root)) differing[collective.Rank] = 1;
            collective.AllReduceSum(differing, $"replica check at step {step}");
            var ranks = Enumerable.Range(0, collective.WorldSize).Where(r => differing[r] != 0).ToList();
            if (ranks.Count > 0)
                throw new InvalidOperationException($"step {step}: the weights of rank{(ranks.Count > 1 ? "s" : "")} {string.Join(", ", ranks)} differ from rank 0's: the replicas diverged");
        }
        if (collective.Writes())
        {
            string line = JsonSerializer.Serialize(new Dictionary<string, object> { ["step"] = step, ["world_size"] = collective.WorldSize, ["params_sha256"] = hex });
            File.AppendAllText(Path.Combine(runDirectory, ReplicasFileName), line + "\n");
        }
        return hex;
    }

}

/// <summary>
/// One rank's part in a run that writes a folder, as every trainer starts it: its rows of each global batch and, for
/// rank 0, the folder (created) and its lock until disposed. The other ranks only read from the folder (a resume) and
/// write nothing, so they take no lock.
/// </summary>
public sealed class RankRun : IDisposable
{
    private readonly string command;
    private readonly OutputLock? outputLock;

    private RankRun(ICollective collective, string command, BatchSlice rows, OutputLock? outputLock)
    {
        this.command = command;
        Collective = collective;
        Rows = rows;
        this.outputLock = outputLock;
    }

    public ICollective Collective { get; }

    /// <summary>This rank's rows of each global batch.</summary>
    public BatchSlice Rows { get; }

    /// <param name="collective">The ranks of a data-parallel run; null: one process.</param>
    /// <param name="batchSize">The global batch, which every rank must have at least one row of.</param>
    public static RankRun Start(ICollective? collective, string outputDirectory, string command, int batchSize)
    {
        collective ??= SingleProcess.Instance;
        var rows = BatchSlice.Of(batchSize, collective.Rank, collective.WorldSize);
        if (!collective.Writes()) return new RankRun(collective, command, rows, null);
        Directory.CreateDirectory(outputDirectory);
        return new RankRun(collective, command, rows, OutputLock.Acquire(outputDirectory, command));
    }

    /// <summary>Fails every rank at start, naming those that resolved other options than rank 0 (<see cref="DataParallel.VerifySameOptions"/>).</summary>
    /// <param name="options">The request less what may differ between ranks: the device index and decode workers (local rank, node size).</param>
    /// <param name="resume">For a run that resumes: the checkpoint folder's name, or "-" for none.</param>
    public void VerifySameOptions(object options, Device device, string? resume = null) =>
        DataParallel.VerifySameOptions(Collective, command, resume is null ? $"{options} device {device.type}" : $"{options} device {device.type} resume {resume}");

    public void Dispose() => outputLock?.Dispose();
}
