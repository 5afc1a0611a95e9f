using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>
/// Picks and starts the collective the launcher's environment calls for: one process without a launcher; under a
/// launcher NCCL for CUDA devices and MPI for the CPU (Horovod's split). MIMFLOW_COLLECTIVE=single|mpi|nccl overrides
/// the choice (nccl with one process checks the NCCL path on a single GPU). NCCL's unique id travels over MPI where
/// MPI started the job (mpirun, srun --mpi=pmix), else over the TCP rendezvous at MASTER_ADDR:MASTER_PORT (torchrun,
/// PyTorchJob).
/// </summary>
public static class Collectives
{
    public const string Variable = "MIMFLOW_COLLECTIVE";

    /// <summary>The backend name a launch would use, without starting it (for messages and the options hash).</summary>
    public static string Choose(LaunchEnvironment launch, DeviceType device, string? forced)
    {
        if (!string.IsNullOrEmpty(forced))
        {
            if (forced is not ("single" or "mpi" or "nccl")) throw new ArgumentException($"{Variable}='{forced}' is not single, mpi or nccl");
            if (forced == "single" && launch.IsDistributed)
                throw new ArgumentException($"{Variable}=single, but the launcher started {launch.WorldSize} ranks ({launch}): each would train alone and write the same run folder");
            return forced;
        }
        if (!launch.IsDistributed) return "single";
        return device == DeviceType.CUDA ? "nccl" : "mpi";
    }

    /// <summary>Starts the collective for this process. Call once, before any training work, on every rank.</summary>
    /// <param name="libtorch">MIMFLOW_LIBTORCH, where NCCL is looked for beside the CUDA libtorch.</param>
    public static ICollective Start(LaunchEnvironment launch, DeviceType device, string? forced = null, string? libtorch = null, string? ncclPath = null)
    {
        string backend = Choose(launch, device, forced);
        var timeout = CollectiveWatchdog.TimeoutFromEnvironment();
        switch (backend)
        {
            case "single":
                return SingleProcess.Instance;
            case "mpi":
                if (!launch.MpiAvailable)
                    throw new InvalidOperationException($"CPU data-parallel training runs over MPI, but this process was not started by MPI ({launch}): " +
                                                        "launch with mpirun or srun --mpi=pmix; torchrun/PyTorchJob launches carry NCCL only (--device cuda)");
                var mpi = MpiCollective.Start(launch.LocalRank, timeout);
                CheckSameWorld(launch, mpi);
                return mpi;
            default:
                if (device != DeviceType.CUDA) throw new InvalidOperationException("the NCCL collective needs --device cuda (and the CUDA libtorch through MIMFLOW_LIBTORCH)");
                var nccl = NcclLibrary.Load(ncclPath ?? Environment.GetEnvironmentVariable(NcclLibrary.Variable), libtorch);
                if (!launch.IsDistributed) return NcclCollective.Start(nccl, 0, 1, 0, id => id!, null, timeout);
                if (launch.MpiAvailable)
                {
                    var bootstrap = MpiCollective.Start(launch.LocalRank, timeout);
                    CheckSameWorld(launch, bootstrap);
                    return NcclCollective.Start(nccl, launch.Rank, launch.WorldSize, launch.LocalRank, id =>
                    {
                        var bytes = id ?? new byte[NcclLibrary.UniqueIdBytes];
                        bootstrap.Broadcast(bytes, 0, "NCCL unique id");
                        return bytes;
                    }, bootstrap, timeout);
                }
                if (launch.MasterAddress is not { } address || launch.MasterPort is not { } port)
                    throw new InvalidOperationException($"{launch}: NCCL without MPI needs MASTER_ADDR and MASTER_PORT for its rendezvous (torchrun and PyTorchJob set them)");
                TcpRendezvous? rendezvous = null;
                return NcclCollective.Start(nccl, launch.Rank, launch.WorldSize, launch.LocalRank, id =>
                {
                    rendezvous = TcpRendezvous.Join(address, port, launch.Rank, launch.WorldSize, id, timeout, message =>
                    {
                        Console.Error.WriteLine(message);
                        Environment.Exit(3);
                    });
                    return rendezvous.Payload;
                }, new Deferred(() => rendezvous?.Dispose()), timeout);
        }
    }

    private static void CheckSameWorld(LaunchEnvironment launch, ICollective mpi)
    {
        if (launch.Launcher != Launcher.None && (mpi.Rank != launch.Rank || mpi.WorldSize != launch.WorldSize))
            throw new InvalidOperationException($"MPI says rank {mpi.Rank} of {mpi.WorldSize}, the launcher's environment rank {launch.Rank} of {launch.WorldSize} ({launch}): " +
                                                "the processes were not started as one MPI job (srun needs --mpi=pmix)");
    }

    private sealed class Deferred(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }
}
