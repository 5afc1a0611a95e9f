using System.Collections;
using System.Globalization;

namespace MimFlow.Training.Distributed;

/// <summary>Who started the processes, as their environment shows it.</summary>
public enum Launcher
{
    /// <summary>No launcher variables: one process.</summary>
    None,

    /// <summary>Open MPI's <c>mpirun</c> (and Kubeflow's MPIJob, which runs it): OMPI_COMM_WORLD_*.</summary>
    OpenMpi,

    /// <summary>Slurm's <c>srun</c>: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID.</summary>
    Slurm,

    /// <summary>torchrun and Kubeflow's PyTorchJob: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.</summary>
    TorchRun,
}

/// <summary>
/// Rank, world size and local rank from the launcher's environment, so the same command line runs as one process or
/// as one rank of many. Open MPI's variables win over Slurm's (mpirun inside an allocation sets both), Slurm's over
/// torchrun's (a batch script may export MASTER_ADDR for the rendezvous while srun starts the tasks). Inside a Slurm
/// allocation a plain command (SLURM_NTASKS set by sbatch, but not started by srun: no SLURM_STEP_ID) stays one
/// process.
/// </summary>
public sealed record LaunchEnvironment(Launcher Launcher, int Rank, int WorldSize, int LocalRank, string? MasterAddress, int? MasterPort, bool MpiAvailable)
{
    public bool IsDistributed => WorldSize > 1;

    public static LaunchEnvironment Single { get; } = new(Launcher.None, 0, 1, 0, null, null, false);

    public static LaunchEnvironment FromProcess() => From(Variables(Environment.GetEnvironmentVariables()));

    public static LaunchEnvironment From(IReadOnlyDictionary<string, string> environment)
    {
        string? Get(string name) => environment.TryGetValue(name, out var value) && value.Length > 0 ? value : null;
        int? Number(string name)
        {
            if (Get(name) is not { } text) return null;
            if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) || value < 0)
                throw new ArgumentException($"the launcher variable {name}='{text}' is not a non-negative integer");
            return value;
        }
        string? master = Get("MASTER_ADDR");
        int? port = Number("MASTER_PORT");
        // PMIx (srun --mpi=pmix, Open MPI 4's own launcher) lets MPI_Init wire up the ranks; without it only a TCP rendezvous can.
        bool pmix = Get("PMIX_RANK") is not null || Get("OMPI_COMM_WORLD_SIZE") is not null;

        LaunchEnvironment Made(Launcher launcher, string rank, string size, string? local)
        {
            int r = Number(rank) ?? 0, n = Number(size) ?? 1, l = local is null ? 0 : Number(local) ?? 0;
            if (n < 1 || r >= n) throw new ArgumentException($"the launcher says rank {r} of world size {n} ({rank}, {size}): a rank must lie in 0..size−1");
            return new LaunchEnvironment(launcher, r, n, l, master, port, pmix);
        }

        if (Get("OMPI_COMM_WORLD_SIZE") is not null)
            return Made(Launcher.OpenMpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK");
        if (Get("SLURM_PROCID") is not null && Get("SLURM_NTASKS") is not null && Get("SLURM_STEP_ID") is not null)
            return Made(Launcher.Slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
        if (Get("WORLD_SIZE") is not null && Get("RANK") is not null)
            return Made(Launcher.TorchRun, "RANK", "WORLD_SIZE", "LOCAL_RANK");
        return Single with { MasterAddress = master, MasterPort = port };
    }

    private static Dictionary<string, string> Variables(IDictionary raw)
    {
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in raw)
            if (entry.Key is string key && entry.Value is string value) variables[key] = value;
        return variables;
    }

    public override string ToString() => Launcher == Launcher.None ? "single process" : $"{Launcher} rank {Rank}/{WorldSize} (local rank {LocalRank})";
}
