using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>NCCL's 128-byte unique id (ncclUniqueId), passed by value to ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential, Size = NcclLibrary.UniqueIdBytes)]
public unsafe struct NcclUniqueId
{
    public fixed byte Bytes[NcclLibrary.UniqueIdBytes];

    public static NcclUniqueId From(byte[] bytes)
    {
        if (bytes.Length != NcclLibrary.UniqueIdBytes) throw new ArgumentException($"an NCCL unique id has {NcclLibrary.UniqueIdBytes} bytes, not {bytes.Length}", nameof(bytes));
        var id = new NcclUniqueId();
        for (int i = 0; i < bytes.Length; i++) id.Bytes[i] = bytes[i];
        return id;
    }

    public byte[] ToArray()
    {
        var bytes = new byte[NcclLibrary.UniqueIdBytes];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = Bytes[i];
        return bytes;
    }
}

/// <summary>
/// libnccl.so.2 and the CUDA runtime call NCCL needs (cudaSetDevice), found where a CUDA PyTorch install keeps them:
/// pip's torch links <c>site-packages/nvidia/nccl/lib/libnccl.so.2</c> and <c>nvidia/cuda_runtime/lib/libcudart.so.*</c>
/// beside <c>torch/lib</c> (MIMFLOW_LIBTORCH). MIMFLOW_NCCL names the library itself where it lives elsewhere.
/// </summary>
public sealed unsafe class NcclLibrary
{
    public const int UniqueIdBytes = 128;
    public const string Variable = "MIMFLOW_NCCL";
    internal const int Float32 = 7, Float64 = 8, Sum = 0;

    private NcclLibrary(IntPtr nccl, IntPtr cudart, string path)
    {
        Path = path;
        IntPtr Export(IntPtr library, string name, string file) => NativeLibrary.TryGetExport(library, name, out var address) ? address
            : throw new EntryPointNotFoundException($"{file} has no '{name}': not NCCL 2 / the CUDA runtime");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)Export(nccl, "ncclGetUniqueId", path);
        CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int>)Export(nccl, "ncclCommInitRank", path);
        AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Export(nccl, "ncclAllReduce", path);
        Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Export(nccl, "ncclBroadcast", path);
        CommDestroy = (delegate* unmanaged<IntPtr, int>)Export(nccl, "ncclCommDestroy", path);
        CommAbort = (delegate* unmanaged<IntPtr, int>)Export(nccl, "ncclCommAbort", path);
        ErrorString = (delegate* unmanaged<int, IntPtr>)Export(nccl, "ncclGetErrorString", path);
        var getVersion = (delegate* unmanaged<int*, int>)Export(nccl, "ncclGetVersion", path);
        int version = 0;
        getVersion(&version);
        Version = version;
        SetDevice = (delegate* unmanaged<int, int>)Export(cudart, "cudaSetDevice", "libcudart");
    }

    public string Path { get; }

    /// <summary>NCCL_VERSION_CODE, e.g. 22703 for 2.27.3.</summary>
    public int Version { get; }

    internal delegate* unmanaged<NcclUniqueId*, int> GetUniqueId { get; }
    internal delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int> CommInitRank { get; }
    internal delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> AllReduce { get; }
    internal delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> Broadcast { get; }
    internal delegate* unmanaged<IntPtr, int> CommDestroy { get; }
    internal delegate* unmanaged<IntPtr, int> CommAbort { get; }
    internal delegate* unmanaged<int, IntPtr> ErrorString { get; }
    internal delegate* unmanaged<int, int> SetDevice { get; }

    /// <summary>Where NCCL is looked for, in order: MIMFLOW_NCCL, then beside the CUDA libtorch, then the loader's path.</summary>
    public static IReadOnlyList<string> Candidates(string? explicitPath, string? libtorch)
    {
        var candidates = new List<string>();
        if (!string.IsNullOrEmpty(explicitPath)) return [explicitPath];
        if (!string.IsNullOrEmpty(libtorch))
        {
            candidates.Add(System.IO.Path.Combine(libtorch, "libnccl.so.2"));
            // site-packages/torch/lib → site-packages/nvidia/nccl/lib
            candidates.Add(System.IO.Path.GetFullPath(System.IO.Path.Combine(libtorch, "..", "..", "nvidia", "nccl", "lib", "libnccl.so.2")));
        }
        candidates.Add("libnccl.so.2");
        return candidates;
    }

    /// <summary>Loads NCCL and the CUDA runtime, or says every place it looked.</summary>
    public static NcclLibrary Load(string? explicitPath, string? libtorch)
    {
        var tried = new List<string>();
        foreach (string candidate in Candidates(explicitPath, libtorch))
        {
            tried.Add(candidate);
            if (!NativeLibrary.TryLoad(candidate, out var nccl)) continue;
            var cudart = LoadCudaRuntime(libtorch)
                ?? throw new DllNotFoundException($"NCCL loaded from {candidate}, but no CUDA runtime (libcudart.so.*) was found beside {libtorch ?? "(MIMFLOW_LIBTORCH unset)"} or on the loader's path");
            return new NcclLibrary(nccl, cudart, candidate);
        }
        throw new DllNotFoundException($"NCCL (libnccl.so.2) could not be loaded from any of: {string.Join(", ", tried)}. " +
                                       $"Point MIMFLOW_LIBTORCH at a CUDA PyTorch's torch/lib (pip installs NCCL beside it in nvidia/nccl/lib), or {Variable} at libnccl.so.2");
    }

    private static IntPtr? LoadCudaRuntime(string? libtorch)
    {
        var folders = new List<string>();
        if (!string.IsNullOrEmpty(libtorch))
        {
            folders.Add(System.IO.Path.GetFullPath(System.IO.Path.Combine(libtorch, "..", "..", "nvidia", "cuda_runtime", "lib")));
            folders.Add(libtorch);
        }
        foreach (string folder in folders.Where(Directory.Exists))
            foreach (string file in Directory.EnumerateFiles(folder, "libcudart*.so*").Order(StringComparer.Ordinal))
                if (NativeLibrary.TryLoad(file, out var handle)) return handle;
        foreach (string name in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so" })
            if (NativeLibrary.TryLoad(name, out var handle)) return handle;
        return null;
    }

    internal string Describe(int code) => Marshal.PtrToStringUTF8(ErrorString(code)) ?? $"NCCL error {code}";
}

/// <summary>
/// NCCL for the GPU collectives: the flat gradient buffer is summed in place on its device pointer (TorchSharp gives the
/// storage's data_ptr and the tensor's storage offset). TorchSharp has no CUDA streams, so every torch kernel runs on
/// the default (null) stream; NCCL is given that same stream, which orders the all-reduce after the backward that wrote
/// the gradients and before the clipping that reads them, with no extra synchronisation. Host numbers go through a
/// small float64 device tensor. The unique id comes from rank 0 over MPI when MPI started the job, else over the
/// <see cref="TcpRendezvous"/> at MASTER_ADDR:MASTER_PORT, whose open connections then also report a lost rank.
/// </summary>
public sealed unsafe class NcclCollective : ICollective
{
    private readonly NcclLibrary nccl;
    private readonly IntPtr comm;
    private readonly Device device;
    private readonly IDisposable? bootstrap;
    private readonly CollectiveWatchdog watchdog;
    private bool disposed;

    private NcclCollective(NcclLibrary nccl, IntPtr comm, int rank, int worldSize, int localRank, Device device, IDisposable? bootstrap, TimeSpan timeout)
    {
        this.nccl = nccl;
        this.comm = comm;
        this.device = device;
        this.bootstrap = bootstrap;
        Rank = rank;
        WorldSize = worldSize;
        LocalRank = localRank;
        watchdog = new CollectiveWatchdog(timeout, rank, Abort);
    }

    /// <summary>Creates the communicator: cudaSetDevice(local rank), the unique id from rank 0 (over <paramref name="shareId"/>), ncclCommInitRank.</summary>
    /// <param name="shareId">Gives rank 0's id bytes to every rank (MPI broadcast or the TCP rendezvous).</param>
    public static NcclCollective Start(NcclLibrary nccl, int rank, int worldSize, int localRank, Func<byte[]?, byte[]> shareId, IDisposable? bootstrap, TimeSpan timeout)
    {
        Check(nccl, nccl.SetDevice(localRank), $"cudaSetDevice({localRank})", cuda: true);
        byte[]? id = null;
        if (rank == 0)
        {
            NcclUniqueId unique;
            Check(nccl, nccl.GetUniqueId(&unique), "ncclGetUniqueId");
            id = unique.ToArray();
        }
        byte[] shared = shareId(id);
        IntPtr comm;
        Check(nccl, nccl.CommInitRank(&comm, worldSize, NcclUniqueId.From(shared), rank), $"ncclCommInitRank (rank {rank} of {worldSize})");
        return new NcclCollective(nccl, comm, rank, worldSize, localRank, new Device(DeviceType.CUDA, localRank), bootstrap, timeout);
    }

    public string Backend => "nccl";
    public int Rank { get; }
    public int WorldSize { get; }
    public int LocalRank { get; }

    public void AllReduceSum(Tensor buffer, string what)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (buffer.device.type != DeviceType.CUDA) throw new ArgumentException($"{what}: NCCL sums CUDA tensors; this one is on {buffer.device}");
        int type = buffer.dtype switch
        {
            ScalarType.Float32 => NcclLibrary.Float32,
            ScalarType.Float64 => NcclLibrary.Float64,
            _ => throw new NotSupportedException($"{what}: NCCL sums float32 or float64 tensors here, not {buffer.dtype}"),
        };
        IntPtr address = TensorMemory.Address(buffer);
        using var armed = watchdog.Arm(what);
        // The CUDA current device is per thread and the training loop resumes on pool threads: make it this rank's GPU.
        Check(nccl, nccl.SetDevice(LocalRank), $"cudaSetDevice({LocalRank})", cuda: true);
        Check(nccl, nccl.AllReduce(address, address, (nuint)buffer.numel(), type, NcclLibrary.Sum, comm, IntPtr.Zero), $"ncclAllReduce ({what})");
        // NCCL only enqueues: wait here so the watchdog bounds the collective itself, not whichever later read waits for it.
        cuda.synchronize(device);
    }

    public void AllReduceSum(double[] values, string what)
    {
        using var host = tensor(values, dtype: ScalarType.Float64);
        using var onDevice = host.to(device);
        AllReduceSum(onDevice, what);
        using var back = onDevice.cpu();
        back.data<double>().CopyTo(values, 0);
    }

    public void Broadcast(byte[] bytes, int root, string what)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var host = tensor(bytes, dtype: ScalarType.Byte);
        using var onDevice = host.to(device);
        IntPtr address = TensorMemory.Address(onDevice);
        using (watchdog.Arm(what))
        {
            Check(nccl, nccl.SetDevice(LocalRank), $"cudaSetDevice({LocalRank})", cuda: true);
            Check(nccl, nccl.Broadcast(address, address, (nuint)bytes.Length, 1, root, comm, IntPtr.Zero), $"ncclBroadcast ({what})");
            cuda.synchronize(device);
        }
        using var back = onDevice.cpu();
        back.data<byte>().CopyTo(bytes, 0);
    }

    public void Abort(string message)
    {
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        nccl.CommAbort(comm);
        Environment.Exit(3);
    }

    private static void Check(NcclLibrary nccl, int code, string call, bool cuda = false)
    {
        if (code == 0) return;
        throw new InvalidOperationException(cuda ? $"{call} failed with CUDA error {code}" : $"{call} failed: {nccl.Describe(code)} ({code})");
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        watchdog.Dispose();
        nccl.CommDestroy(comm);
        bootstrap?.Dispose();
    }
}
