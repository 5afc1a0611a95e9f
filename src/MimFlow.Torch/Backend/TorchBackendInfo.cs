namespace MimFlow.Torch.Backend;

/// <summary>Whether libLibTorchSharp.so had to be patched for this system's libstdc++, and how.</summary>
/// <param name="Applied">True when the loaded copy is the patched one.</param>
/// <param name="WeakenedVersions">The version needs marked weak, as <c>library:version</c>.</param>
/// <param name="PatchedCopy">The cached patched file that was loaded; null when none was needed.</param>
public sealed record CompatibilityFix(bool Applied, IReadOnlyList<string> WeakenedVersions, string? PatchedCopy)
{
    public static CompatibilityFix NotNeeded { get; } = new(false, [], null);
}

/// <summary>What the backend loaded, for reports and for code that must pick a device.</summary>
public sealed record TorchBackendInfo(
    TorchRoute Route,
    string LibTorchDirectory,
    string LibTorchVersion,
    string TorchSharpVersion,
    string LibTorchSharpPath,
    CompatibilityFix Fix,
    bool CudaAvailable,
    int CudaDeviceCount)
{
    /// <summary>The device computations should run on by default: the first GPU on the CUDA route, else the CPU.</summary>
    public TorchSharp.torch.Device DefaultDevice =>
        CudaAvailable ? TorchSharp.torch.CUDA : TorchSharp.torch.CPU;
}
