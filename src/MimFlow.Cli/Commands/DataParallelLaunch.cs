using System.CommandLine;
using MimFlow.Training.Distributed;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary>
/// How a training command joins a data-parallel job: the launcher's environment (mpirun, srun, torchrun/PyTorchJob)
/// says the rank and world size, so the same command line runs alone or as one rank of many; the local rank picks
/// the GPU. A failure on any rank aborts every rank, naming the rank and the error, rather than leaving the others
/// in a collective; rank 0 alone shows progress.
/// </summary>
internal static class DataParallelLaunch
{
    public static async Task<int> RunAsync(ParseResult parsed, torch.Device? device, Func<ICollective, torch.Device?, Task<int>> body)
    {
        var launch = LaunchEnvironment.FromProcess();
        string? forced = Environment.GetEnvironmentVariable(Collectives.Variable);
        if (!launch.IsDistributed && string.IsNullOrEmpty(forced)) return await body(SingleProcess.Instance, device);
        var type = device?.type ?? DeviceType.CPU;
        using var collective = Collectives.Start(launch, type, forced, MimFlowCli.BackendOptions(parsed).LibTorchDirectory);
        var rankDevice = type == DeviceType.CUDA ? new torch.Device(DeviceType.CUDA, collective.LocalRank) : device;
        try
        {
            return await body(collective, rankDevice);
        }
        catch (Exception e) when (collective.WorldSize > 1)
        {
            string why = e is OperationCanceledException ? "cancelled" : e.Message.Split('\n')[0];
            collective.Abort($"mimflow rank {collective.Rank} of {collective.WorldSize}: error: {why}; ending every rank of the job");
            throw;
        }
    }

    /// <summary>
    /// A training command's ranks: rank 0, which writes the run folder, shows the run's progress and reports it; the
    /// other ranks run the same request silently.
    /// </summary>
    /// <param name="silent">The run without progress, on a rank that does not write.</param>
    /// <param name="shown">The run with its progress display and closing report, on rank 0.</param>
    public static Task<int> RunTrainingAsync(ParseResult parsed, torch.Device? device, Func<ICollective, torch.Device?, Task> silent, Func<ICollective, torch.Device?, Task> shown) =>
        RunAsync(parsed, device, async (collective, rankDevice) =>
        {
            await (collective.Writes() ? shown(collective, rankDevice) : silent(collective, rankDevice));
            return 0;
        });
}
