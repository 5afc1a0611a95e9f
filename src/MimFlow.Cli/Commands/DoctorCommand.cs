using System.CommandLine;
using System.Text.Json;
using MimFlow.Core.Diagnostics;
using MimFlow.Torch.Backend;
using MimFlow.Torch.Diagnostics;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

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
            var report = Doctor.Examine(MimFlowCli.BackendOptions(parsed), LibvipsVersion);
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

    /// <summary>libvips' version, or why it does not load (the doctor reports it rather than failing on it).</summary>
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
