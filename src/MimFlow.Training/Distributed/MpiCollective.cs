using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>
/// Open MPI 4 (libmpi.so.40) by P/Invoke: the CPU collectives and the process bootstrap. MPI.NET binds MS-MPI only, so
/// the few calls needed are bound here; Open MPI's handles are the addresses of exported objects
/// (<c>ompi_mpi_comm_world</c>, <c>ompi_mpi_double</c>, <c>ompi_mpi_op_sum</c>, …) and MPI_IN_PLACE is (void*)1. MPI is
/// initialised with MPI_THREAD_SERIALIZED: the training loop's awaits may resume on another thread, but never two at once.
/// Errors are fatal (MPI_ERRORS_ARE_FATAL, Open MPI's default on MPI_COMM_WORLD), and mpirun ends every rank when one
/// exits abnormally, naming it; the <see cref="CollectiveWatchdog"/> bounds a collective that a stalled rank never joins.
/// </summary>
public sealed unsafe class MpiCollective : ICollective
{
    public const string LibraryName = "libmpi.so.40";
    private const int ThreadSerialized = 2;
    private const int Success = 0;

    private readonly IntPtr library;
    private readonly IntPtr world, doubleType, floatType, byteType, sum;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> allreduce;
    private readonly delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int> broadcast;
    private readonly delegate* unmanaged<IntPtr, int, int> abort;
    private readonly delegate* unmanaged<int> finalize;
    private readonly CollectiveWatchdog watchdog;
    private bool disposed;

    private MpiCollective(IntPtr library, int localRank, TimeSpan timeout)
    {
        this.library = library;
        IntPtr Export(string name) => NativeLibrary.TryGetExport(library, name, out var address) ? address
            : throw new EntryPointNotFoundException($"{LibraryName} has no '{name}': not Open MPI 4 (MimFlow binds Open MPI's ABI)");
        world = Export("ompi_mpi_comm_world");
        doubleType = Export("ompi_mpi_double");
        floatType = Export("ompi_mpi_float");
        byteType = Export("ompi_mpi_byte");
        sum = Export("ompi_mpi_op_sum");
        allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Export("MPI_Allreduce");
        broadcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int>)Export("MPI_Bcast");
        abort = (delegate* unmanaged<IntPtr, int, int>)Export("MPI_Abort");
        finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        var initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        var initThread = (delegate* unmanaged<int*, IntPtr*, int, int*, int>)Export("MPI_Init_thread");
        var commRank = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_rank");
        var commSize = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_size");
        int already = 0;
        Check(initialized(&already), "MPI_Initialized");
        if (already == 0)
        {
            int provided = 0;
            Check(initThread(null, null, ThreadSerialized, &provided), "MPI_Init_thread");
            if (provided < ThreadSerialized)
                throw new NotSupportedException($"Open MPI granted thread level {provided}, MimFlow needs MPI_THREAD_SERIALIZED (2): its training loop resumes on pool threads");
        }
        int rank = 0, size = 0;
        Check(commRank(world, &rank), "MPI_Comm_rank");
        Check(commSize(world, &size), "MPI_Comm_size");
        Rank = rank;
        WorldSize = size;
        LocalRank = localRank;
        watchdog = new CollectiveWatchdog(timeout, rank, message => Abort(message));
    }

    /// <summary>Loads Open MPI and joins the job mpirun (or srun with PMIx) started.</summary>
    public static MpiCollective Start(int localRank, TimeSpan timeout)
    {
        if (!NativeLibrary.TryLoad(LibraryName, out var library))
            throw new DllNotFoundException($"{LibraryName} could not be loaded: install Open MPI 4 (Debian/Ubuntu: apt-get install openmpi-bin) on every node, or launch without mpirun");
        return new MpiCollective(library, localRank, timeout);
    }

    public string Backend => "mpi";
    public int Rank { get; }
    public int WorldSize { get; }
    public int LocalRank { get; }

    public void AllReduceSum(Tensor buffer, string what)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var (type, size) = buffer.dtype switch
        {
            ScalarType.Float32 => (floatType, 4),
            ScalarType.Float64 => (doubleType, 8),
            _ => throw new NotSupportedException($"{what}: MPI sums float32 or float64 tensors, not {buffer.dtype}"),
        };
        if (buffer.device.type != DeviceType.CPU || !buffer.is_contiguous())
        {
            // Debian's Open MPI is not CUDA-aware: a device tensor goes through host memory.
            using var host = buffer.cpu().contiguous().clone();
            AllReduceSum(host, what);
            using var noGrad = no_grad();
            buffer.copy_(host);
            return;
        }
        IntPtr address = TensorMemory.Address(buffer);
        long count = buffer.numel();
        using var armed = watchdog.Arm(what);
        for (long done = 0; done < count;)
        {
            int chunk = (int)Math.Min(int.MaxValue / 2, count - done);
            Check(allreduce(InPlace, address + (nint)(done * size), chunk, type, sum, world), $"MPI_Allreduce ({what})");
            done += chunk;
        }
    }

    public void AllReduceSum(double[] values, string what)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var armed = watchdog.Arm(what);
        fixed (double* data = values) Check(allreduce(InPlace, (IntPtr)data, values.Length, doubleType, sum, world), $"MPI_Allreduce ({what})");
    }

    public void Broadcast(byte[] bytes, int root, string what)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var armed = watchdog.Arm(what);
        fixed (byte* data = bytes) Check(broadcast((IntPtr)data, bytes.Length, byteType, root, world), $"MPI_Bcast ({what})");
    }

    /// <summary>Ends every rank of the job (mpirun kills the rest) after saying why on stderr.</summary>
    public void Abort(string message)
    {
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        abort(world, 3);
    }

    private static readonly IntPtr InPlace = 1;

    private static void Check(int code, string call)
    {
        if (code != Success) throw new InvalidOperationException($"{call} failed with MPI error {code}");
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        watchdog.Dispose();
        finalize();
    }
}
