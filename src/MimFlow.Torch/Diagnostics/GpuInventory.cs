using System.Runtime.InteropServices;
using System.Text;

namespace MimFlow.Torch.Diagnostics;

public sealed record GpuDevice(int Index, string Name, long TotalMemoryBytes, long FreeMemoryBytes);

/// <summary>
/// Lists NVIDIA GPUs through NVML (libnvidia-ml.so.1, installed with the driver). TorchSharp exposes no device
/// names or memory sizes, and NVML's C API is stable across driver versions.
/// </summary>
public static unsafe class GpuInventory
{
    public static IReadOnlyList<GpuDevice> Read()
    {
        if (!NativeLibrary.TryLoad("libnvidia-ml.so.1", out IntPtr nvml)) return [];
        var init = (delegate* unmanaged<int>)Export(nvml, "nvmlInit_v2");
        var shutdown = (delegate* unmanaged<int>)Export(nvml, "nvmlShutdown");
        var count = (delegate* unmanaged<uint*, int>)Export(nvml, "nvmlDeviceGetCount_v2");
        var handleByIndex = (delegate* unmanaged<uint, IntPtr*, int>)Export(nvml, "nvmlDeviceGetHandleByIndex_v2");
        var name = (delegate* unmanaged<IntPtr, byte*, uint, int>)Export(nvml, "nvmlDeviceGetName");
        var memory = (delegate* unmanaged<IntPtr, MemoryInfo*, int>)Export(nvml, "nvmlDeviceGetMemoryInfo");
        if (init is null || shutdown is null || count is null || handleByIndex is null || name is null || memory is null) return [];
        if (init() != 0) return [];
        try
        {
            uint devices;
            if (count(&devices) != 0) return [];
            var result = new List<GpuDevice>();
            byte* buffer = stackalloc byte[96];
            for (uint i = 0; i < devices; i++)
            {
                IntPtr device;
                if (handleByIndex(i, &device) != 0) continue;
                string deviceName = name(device, buffer, 96) == 0 ? Encoding.UTF8.GetString(buffer, IndexOfZero(buffer, 96)) : "unknown";
                MemoryInfo info;
                bool haveMemory = memory(device, &info) == 0;
                result.Add(new GpuDevice((int)i, deviceName, haveMemory ? (long)info.Total : 0, haveMemory ? (long)info.Free : 0));
            }
            return result;
        }
        finally
        {
            shutdown();
        }
    }

    private static void* Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr address) ? (void*)address : null;

    private static int IndexOfZero(byte* buffer, int length)
    {
        for (int i = 0; i < length; i++)
            if (buffer[i] == 0) return i;
        return length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MemoryInfo
    {
        public ulong Total;
        public ulong Free;
        public ulong Used;
    }
}
