using MimFlow.Core.Diagnostics;
using MimFlow.Torch.Backend;

namespace MimFlow.Torch.Diagnostics;

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

/// <summary><c>mimflow doctor</c>: the host, the torch backend (loaded, with the compatibility fix if needed), the GPUs, and a computation checked on the device.</summary>
public static class Doctor
{
    /// <param name="imageLibrary">The image library's version (libvips), as the caller can read it.</param>
    public static DoctorReport Examine(TorchBackendOptions options, Func<string> imageLibrary)
    {
        var host = HostFacts.Read();
        string vips = imageLibrary();
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
}
