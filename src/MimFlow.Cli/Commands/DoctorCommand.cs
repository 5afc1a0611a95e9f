using System.CommandLine;
using System.Text.Json;
using MimFlow.Core.Diagnostics;
using MimFlow.Torch.Backend;
using MimFlow.Torch.Diagnostics;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>What <c>mimflow doctor</c> found; <see cref="BackendError"/> is set when the torch backend did not load.</summary>
public sealed record DoctorReport(
    HostFacts Host,
    string LibvipsVersion,
    TorchBackendInfo? Backend,
    string? BackendError,
    IReadOnlyList<GpuDevice> Gpus,
    SelfTestResult? SelfTest)
{
    public bool Healthy => Backend is not null && SelfTest is { Passed: true };
}

/// <summary><c>mimflow doctor</c>: versions, the compatibility fix, the device, and a computation checked on it.</summary>
internal static class DoctorCommand
{
    public static Command Create(CliContext context)
    {
        var json = new Option<bool>("--json") { Description = "Print the report as JSON instead of a table" };
        var command = new Command("doctor", "Check the installation: .NET, TorchSharp and libtorch, the libstdc++ fix, the device (with a checked matmul and backward), libvips, cores, memory");
        command.Options.Add(json);
        command.SetAction((parsed, _) =>
        {
            var report = Examine(MimFlowCli.BackendOptions(parsed));
            if (parsed.GetValue(json))
                context.Console.Profile.Out.Writer.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            else
                Render(context.Console, report);
            if (report.BackendError is not null) context.Error.WriteLine($"mimflow: error: {report.BackendError}");
            if (report.SelfTest is { } test)
                context.Report($"matmul + backward checked on {test.Device} ({(test.Passed ? "passed" : "FAILED")}); libstdc++ fix {(report.Backend!.Fix.Applied ? "applied" : "not needed")}");
            return Task.FromResult(report.Healthy ? 0 : MimFlowCli.Failure);
        });
        return command;
    }

    public static DoctorReport Examine(TorchBackendOptions options)
    {
        var host = HostFacts.Read();
        string vips = LibvipsVersion();
        var gpus = GpuInventory.Read();
        try
        {
            var backend = TorchBackend.EnsureLoaded(options);
            var selfTest = BackendSelfTest.Run(backend.DefaultDevice);
            return new DoctorReport(host, vips, backend, null, gpus, selfTest);
        }
        catch (TorchBackendException e)
        {
            return new DoctorReport(host, vips, null, e.Message, gpus, null);
        }
    }

    private static string LibvipsVersion()
    {
        try
        {
            return MimFlow.Data.Decoding.LibvipsSettings.Version;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException)
        {
            return $"not loadable ({e.GetBaseException().Message})";
        }
    }

    private static void Render(IAnsiConsole console, DoctorReport report)
    {
        var table = new Table().Title("mimflow doctor").AddColumn("check").AddColumn("result");
        void Row(string name, string value) => table.AddRow(Markup.Escape(name), Markup.Escape(value));

        Row(".NET", $"{report.Host.DotnetVersion} on {report.Host.OperatingSystem}");
        Row("cores", report.Host.LogicalCores.ToString());
        Row("memory", $"{Gib(report.Host.AvailableMemoryBytes)} available of {Gib(report.Host.TotalMemoryBytes)}");
        Row("libvips", report.LibvipsVersion);
        if (report.Backend is { } backend)
        {
            Row("TorchSharp", backend.TorchSharpVersion);
            Row("libtorch", $"{backend.LibTorchVersion} from {backend.LibTorchDirectory}");
            Row("route", backend.Route == TorchRoute.Cuda ? "cuda (MIMFLOW_LIBTORCH / --libtorch)" : "cpu (TorchSharp-cpu)");
            Row("libstdc++ fix", backend.Fix.Applied
                ? $"applied: weak {string.Join(", ", backend.Fix.WeakenedVersions)}; loaded {backend.Fix.PatchedCopy}"
                : $"not needed; loaded {backend.LibTorchSharpPath}");
            Row("device", backend.CudaAvailable ? $"cuda ({backend.CudaDeviceCount} device(s))" : "cpu");
        }
        else
        {
            Row("torch backend", $"FAILED: {report.BackendError}");
        }
        foreach (var gpu in report.Gpus)
            Row($"gpu {gpu.Index}", $"{gpu.Name}, {Gib(gpu.TotalMemoryBytes)} total, {Gib(gpu.FreeMemoryBytes)} free");
        if (report.Gpus.Count == 0) Row("gpus", "none visible (no NVIDIA driver)");
        if (report.SelfTest is { } test)
            Row("self-test", $"{(test.Passed ? "passed" : "FAILED")} on {test.Device}: matmul max error {test.MatmulMaxAbsError:E2}, gradient max error {test.GradientMaxAbsError:E2}, {test.Elapsed.TotalMilliseconds:F0} ms");
        console.Write(table);
    }

    private static string Gib(long? bytes) => bytes is null ? "unknown" : $"{bytes.Value / (1024.0 * 1024 * 1024):F1} GiB";
}
