using System.Diagnostics;

namespace MimFlow.Tests.Distributed;

/// <summary>
/// Runs the built mimflow under Open MPI's mpirun, as an operator would. Where mpirun is not installed the tests that
/// need it are reported as skipped with the reason (never passed silently); CI installs Debian's openmpi-bin.
/// </summary>
internal static class MpiRun
{
    public static string? Path { get; } = Find();

    public const string SkipReason = "mpirun not found on PATH: the distributed tests need Open MPI (Debian/Ubuntu: apt-get install openmpi-bin; .ci/run installs it)";

    public static void SkipUnlessAvailable() => Skip.If(Path is null, SkipReason);

    private static string? Find() =>
        (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => System.IO.Path.Combine(folder, "mpirun")).FirstOrDefault(File.Exists);

    public sealed record Outcome(int ExitCode, string Output, string Error, TimeSpan Elapsed);

    /// <summary>The mpirun options every test uses: root allowed (CI runs as root), no core binding on a 2-core machine,
    /// shared memory without the cross-memory-attach that containers forbid.</summary>
    public static IReadOnlyList<string> Options { get; } = ["--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none"];

    public static Dictionary<string, string> Variables() => new()
    {
        ["OMPI_ALLOW_RUN_AS_ROOT"] = "1", ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1", ["OMPI_MCA_rmaps_base_oversubscribe"] = "1",
    };

    public static string CliDll => System.IO.Path.Combine(AppContext.BaseDirectory, "MimFlow.Cli.dll");

    /// <summary>mpirun -np N dotnet MimFlow.Cli.dll ARGS.</summary>
    public static Task<Outcome> RunAsync(int ranks, IReadOnlyList<string> args, Action<Process>? started = null, TimeSpan? timeout = null) =>
        RunRawAsync([.. Options, "-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "dotnet", CliDll, .. args], started, timeout);

    public static async Task<Outcome> RunRawAsync(IReadOnlyList<string> mpirunArgs, Action<Process>? started = null, TimeSpan? timeout = null)
    {
        var start = new ProcessStartInfo(Path ?? throw new InvalidOperationException(SkipReason)) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in mpirunArgs) start.ArgumentList.Add(arg);
        foreach (var (key, value) in Variables()) start.Environment[key] = value;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        started?.Invoke(process);
        using var limit = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(4));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpirun {string.Join(' ', mpirunArgs)} did not end within {(timeout ?? TimeSpan.FromMinutes(4)).TotalSeconds:F0} s: {await stderr}");
        }
        return new Outcome(process.ExitCode, await stdout, await stderr, clock.Elapsed);
    }

    /// <summary>The rank processes mpirun started (its children running the CLI), by their OMPI_COMM_WORLD_RANK.</summary>
    public static Dictionary<int, int> RankProcesses(int mpirunPid)
    {
        var ranks = new Dictionary<int, int>();
        foreach (string folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(System.IO.Path.GetFileName(folder), out int pid)) continue;
            try
            {
                string status = File.ReadAllText(System.IO.Path.Combine(folder, "status"));
                string? parent = status.Split('\n').FirstOrDefault(l => l.StartsWith("PPid:", StringComparison.Ordinal));
                if (parent is null || int.Parse(parent[5..].Trim(), System.Globalization.CultureInfo.InvariantCulture) != mpirunPid) continue;
                string environ = File.ReadAllText(System.IO.Path.Combine(folder, "environ"));
                string? rank = environ.Split('\0').FirstOrDefault(v => v.StartsWith("OMPI_COMM_WORLD_RANK=", StringComparison.Ordinal));
                if (rank is not null) ranks[int.Parse(rank["OMPI_COMM_WORLD_RANK=".Length..], System.Globalization.CultureInfo.InvariantCulture)] = pid;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return ranks;
    }
}
