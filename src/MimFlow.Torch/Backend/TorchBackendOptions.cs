namespace MimFlow.Torch.Backend;

public enum TorchRoute
{
    /// <summary>TorchSharp-cpu's own libtorch, shipped next to the program.</summary>
    Cpu,

    /// <summary>A CUDA libtorch from another install (e.g. PyTorch's <c>torch/lib</c>), named by MIMFLOW_LIBTORCH.</summary>
    Cuda,
}

/// <summary>How to load the backend. The default reads <c>MIMFLOW_LIBTORCH</c>: set → CUDA route from that folder.</summary>
public sealed record TorchBackendOptions
{
    public const string LibTorchEnvironmentVariable = "MIMFLOW_LIBTORCH";

    /// <summary>Folder holding libc10, libtorch_cpu, libc10_cuda, libtorch_cuda and libtorch; null for the CPU route.</summary>
    public string? LibTorchDirectory { get; init; }

    /// <summary>Where the patched copy of libLibTorchSharp.so is cached; null for <see cref="Core.IO.CacheDirectory"/>.</summary>
    public string? CacheDirectory { get; init; }

    public TorchRoute Route => LibTorchDirectory is null ? TorchRoute.Cpu : TorchRoute.Cuda;

    /// <param name="libTorchDirectory">An explicit folder (the CLI's <c>--libtorch</c>); wins over the environment.</param>
    public static TorchBackendOptions FromEnvironment(string? libTorchDirectory = null)
    {
        string? directory = string.IsNullOrWhiteSpace(libTorchDirectory)
            ? Environment.GetEnvironmentVariable(LibTorchEnvironmentVariable)
            : libTorchDirectory;
        return new TorchBackendOptions { LibTorchDirectory = string.IsNullOrWhiteSpace(directory) ? null : Path.GetFullPath(directory) };
    }
}
