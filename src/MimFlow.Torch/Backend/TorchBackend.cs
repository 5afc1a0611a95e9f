using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace MimFlow.Torch.Backend;

/// <summary>
/// The one place that loads libtorch and TorchSharp's native bridge. Call <see cref="EnsureLoaded"/> before any
/// other TorchSharp use (the CLI and the tests do). CPU route: TorchSharp-cpu's libtorch next to the program, with
/// the libstdc++ fix applied where the system needs it. CUDA route: the five libtorch libraries from
/// <see cref="TorchBackendOptions.LibTorchDirectory"/>, then the bridge, then CUDA initialisation.
/// </summary>
public static class TorchBackend
{
    private const string BridgeFileName = "libLibTorchSharp.so";
    private static readonly string[] CpuLibraries = ["libc10.so", "libtorch_cpu.so", "libtorch.so"];
    private static readonly string[] CudaLibraries = ["libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so"];

    // Native libraries belong to the process: once loaded they stay, so which route was taken is process state
    // by nature. This lock and field are the only record of it.
    private static readonly Lock Gate = new();
    private static TorchBackendInfo? loaded;

    public static TorchBackendInfo EnsureLoaded(TorchBackendOptions? options = null)
    {
        options ??= TorchBackendOptions.FromEnvironment();
        lock (Gate)
        {
            if (loaded is not null)
            {
                if (loaded.Route != options.Route)
                    throw new TorchBackendException(
                        $"The torch backend is already loaded on the {loaded.Route} route from {loaded.LibTorchDirectory}; " +
                        $"a process cannot switch to the {options.Route} route. Start a new process.");
                return loaded;
            }
            loaded = Load(options);
            return loaded;
        }
    }

    private static TorchBackendInfo Load(TorchBackendOptions options)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new TorchBackendException($"MimFlow's torch backend supports linux-x64; this is {RuntimeInformation.RuntimeIdentifier}.");

        string bridgeDirectory = FindProgramNativeDirectory(BridgeFileName)
            ?? throw new TorchBackendException(
                $"{BridgeFileName} was not found next to the program ({string.Join(", ", ProgramNativeDirectories())}). " +
                "Rebuild the program (dotnet build) so TorchSharp's native files are copied.");

        string libTorchDirectory;
        string[] libraries;
        if (options.Route == TorchRoute.Cuda)
        {
            libTorchDirectory = options.LibTorchDirectory!;
            libraries = CudaLibraries;
            if (!Directory.Exists(libTorchDirectory))
                throw new TorchBackendException(
                    $"{TorchBackendOptions.LibTorchEnvironmentVariable} (or --libtorch) names {libTorchDirectory}, which does not exist. " +
                    "Point it at the lib/ folder of a CUDA PyTorch install: python3 -c \"import torch,os;print(os.path.dirname(torch.__file__)+'/lib')\".");
        }
        else
        {
            libraries = CpuLibraries;
            libTorchDirectory = FindProgramNativeDirectory(CpuLibraries[1])
                ?? throw new TorchBackendException(
                    $"{CpuLibraries[1]} was not found next to the program ({string.Join(", ", ProgramNativeDirectories())}). " +
                    "The TorchSharp-cpu package brings it: restore and rebuild, or set MIMFLOW_LIBTORCH for a CUDA libtorch.");
        }

        var handles = new Dictionary<string, IntPtr>(StringComparer.Ordinal);
        foreach (string library in libraries)
        {
            string path = Path.Combine(libTorchDirectory, library);
            if (!File.Exists(path))
                throw new TorchBackendException(
                    $"{path} is missing. {(options.Route == TorchRoute.Cuda ? $"{TorchBackendOptions.LibTorchEnvironmentVariable} must name a folder holding {string.Join(", ", CudaLibraries)}." : "Rebuild the program so TorchSharp-cpu's libtorch is copied.")}");
            handles[library] = LoadOrExplain(path);
        }

        var (bridgePath, fix) = LibTorchSharpCompatibility.Prepare(Path.Combine(bridgeDirectory, BridgeFileName), options.CacheDirectory);
        IntPtr bridge = LoadOrExplain(bridgePath);

        // TorchSharp asks for its bridge by the bare name "LibTorchSharp"; answer with the copy loaded above so the
        // runtime never tries the unpatched file.
        NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, (name, _, _) => name switch
        {
            "LibTorchSharp" or "libLibTorchSharp" or BridgeFileName => bridge,
            "torch_cpu" => handles["libtorch_cpu.so"],
            "torch_cuda" => handles.GetValueOrDefault("libtorch_cuda.so"),
            _ => IntPtr.Zero,
        });

        bool cudaAvailable = false;
        int cudaDevices = 0;
        try
        {
            if (options.Route == TorchRoute.Cuda)
            {
                torch.InitializeDeviceType(DeviceType.CUDA);
                cudaAvailable = torch.cuda.is_available();
                cudaDevices = torch.cuda.device_count();
            }
            else
            {
                torch.InitializeDeviceType(DeviceType.CPU);
            }
        }
        catch (Exception e) when (e is not TorchBackendException)
        {
            throw new TorchBackendException(
                $"libtorch from {libTorchDirectory} loaded but TorchSharp could not initialise the {options.Route} device: {FirstLine(e.Message)}" +
                (options.Route == TorchRoute.Cuda ? " Check that a GPU and its driver are visible (nvidia-smi) and that the libtorch is a CUDA build." : ""), e);
        }

        return new TorchBackendInfo(
            options.Route,
            libTorchDirectory,
            LibTorchVersion(libTorchDirectory),
            TorchSharpVersion(),
            bridgePath,
            fix,
            cudaAvailable,
            cudaDevices);
    }

    private static IntPtr LoadOrExplain(string path)
    {
        try
        {
            return NativeLibrary.Load(path);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new TorchBackendException(
                $"Could not load {path}: {FirstLine(e.Message)} Run 'mimflow doctor' for the details of this machine; " +
                "for a CUDA libtorch, the folder must come from a PyTorch build matching this machine's driver.", e);
        }
    }

    /// <summary>Folders the .NET host searches for the program's native files (the build copies TorchSharp's there).</summary>
    private static IEnumerable<string> ProgramNativeDirectories()
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string? fromHost = AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string;
        var candidates = (fromHost ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Append(AppContext.BaseDirectory)
            .Append(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native"));
        foreach (string directory in candidates)
        {
            string full = Path.GetFullPath(directory);
            if (seen.Add(full)) yield return full;
        }
    }

    private static string? FindProgramNativeDirectory(string fileName) =>
        ProgramNativeDirectories().FirstOrDefault(d => File.Exists(Path.Combine(d, fileName)));

    /// <summary>PyTorch installs keep <c>version.py</c> beside <c>lib/</c>; TorchSharp-cpu's libtorch is the version it is built for.</summary>
    private static string LibTorchVersion(string libTorchDirectory)
    {
        string versionFile = Path.Combine(libTorchDirectory, "..", "version.py");
        if (File.Exists(versionFile))
        {
            foreach (string line in File.ReadLines(versionFile))
            {
                string trimmed = line.Trim();
                if (trimmed.StartsWith("__version__", StringComparison.Ordinal))
                    return trimmed.Split('=', 2)[1].Trim().Trim('\'', '"') + " (PyTorch install)";
            }
        }
        string built = Version.TryParse(torch.__version__, out var version) ? version.ToString(3) : torch.__version__;
        return $"{built} (TorchSharp-cpu package)";
    }

    private static string TorchSharpVersion() =>
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown";

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}
