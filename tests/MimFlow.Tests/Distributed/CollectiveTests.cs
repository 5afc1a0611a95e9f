using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using MimFlow.Training.Distributed;

namespace MimFlow.Tests.Distributed;

/// <summary>The parts of the collective layer that need no second process: launcher variables, batch slices, the NCCL
/// binding's loading and the TCP rendezvous on loopback, the watchdog.</summary>
public sealed class CollectiveTests
{
    [Fact]
    public void Rank_world_and_local_rank_come_from_each_launchers_variables()
    {
        Assert.Equal(LaunchEnvironment.Single, LaunchEnvironment.From(new Dictionary<string, string>()));
        var mpi = LaunchEnvironment.From(new Dictionary<string, string>
        {
            ["OMPI_COMM_WORLD_RANK"] = "3", ["OMPI_COMM_WORLD_SIZE"] = "8", ["OMPI_COMM_WORLD_LOCAL_RANK"] = "1",
            // mpirun inside a Slurm allocation: Open MPI's own numbering wins.
            ["SLURM_PROCID"] = "0", ["SLURM_NTASKS"] = "1", ["SLURM_STEP_ID"] = "0",
        });
        Assert.Equal((Launcher.OpenMpi, 3, 8, 1, true), (mpi.Launcher, mpi.Rank, mpi.WorldSize, mpi.LocalRank, mpi.MpiAvailable));
        var slurm = LaunchEnvironment.From(new Dictionary<string, string>
        {
            ["SLURM_PROCID"] = "5", ["SLURM_NTASKS"] = "16", ["SLURM_LOCALID"] = "5", ["SLURM_STEP_ID"] = "0", ["MASTER_ADDR"] = "node01", ["MASTER_PORT"] = "29500",
        });
        Assert.Equal((Launcher.Slurm, 5, 16, 5, "node01", 29500, false), (slurm.Launcher, slurm.Rank, slurm.WorldSize, slurm.LocalRank, slurm.MasterAddress, slurm.MasterPort, slurm.MpiAvailable));
        // sbatch's own shell (no step) runs one process even though the allocation has tasks.
        Assert.False(LaunchEnvironment.From(new Dictionary<string, string> { ["SLURM_PROCID"] = "0", ["SLURM_NTASKS"] = "16" }).IsDistributed);
        var torchrun = LaunchEnvironment.From(new Dictionary<string, string>
        {
            ["RANK"] = "1", ["WORLD_SIZE"] = "2", ["LOCAL_RANK"] = "1", ["MASTER_ADDR"] = "127.0.0.1", ["MASTER_PORT"] = "29500",
        });
        Assert.Equal((Launcher.TorchRun, 1, 2, 1), (torchrun.Launcher, torchrun.Rank, torchrun.WorldSize, torchrun.LocalRank));
        var bad = Assert.Throws<ArgumentException>(() => LaunchEnvironment.From(new Dictionary<string, string> { ["RANK"] = "2", ["WORLD_SIZE"] = "2" }));
        Assert.Contains("rank 2 of world size 2", bad.Message);
        Assert.Contains("WORLD_SIZE='two'", Assert.Throws<ArgumentException>(() => LaunchEnvironment.From(new Dictionary<string, string> { ["RANK"] = "0", ["WORLD_SIZE"] = "two" })).Message);
    }

    [Fact]
    public void Backend_follows_the_device_and_a_cpu_run_without_mpi_is_refused_with_the_way_out()
    {
        var torchrun = new LaunchEnvironment(Launcher.TorchRun, 0, 2, 0, "127.0.0.1", 29500, MpiAvailable: false);
        Assert.Equal("nccl", Collectives.Choose(torchrun, TorchSharp.DeviceType.CUDA, null));
        Assert.Equal("mpi", Collectives.Choose(torchrun, TorchSharp.DeviceType.CPU, null));
        Assert.Equal("single", Collectives.Choose(LaunchEnvironment.Single, TorchSharp.DeviceType.CUDA, null));
        Assert.Equal("nccl", Collectives.Choose(LaunchEnvironment.Single, TorchSharp.DeviceType.CUDA, "nccl"));
        Assert.Contains("each would train alone", Assert.Throws<ArgumentException>(() => Collectives.Choose(torchrun, TorchSharp.DeviceType.CPU, "single")).Message);
        var refused = Assert.Throws<InvalidOperationException>(() => Collectives.Start(torchrun, TorchSharp.DeviceType.CPU));
        Assert.Contains("mpirun or srun --mpi=pmix", refused.Message);
    }

    [Fact]
    public void Slices_of_the_global_batch_are_contiguous_balanced_and_laid_end_to_end_are_the_batch()
    {
        foreach (int world in new[] { 1, 2, 3, 8 })
            foreach (int batch in new[] { 8, 9, 64, 127 })
            {
                var slices = Enumerable.Range(0, world).Select(r => BatchSlice.Of(batch, r, world)).ToList();
                Assert.Equal(0, slices[0].Offset);
                for (int r = 1; r < world; r++) Assert.Equal(slices[r - 1].Offset + slices[r - 1].Count, slices[r].Offset);
                Assert.Equal(batch, slices.Sum(s => s.Count));
                Assert.True(slices.Max(s => s.Count) - slices.Min(s => s.Count) <= 1);
            }
        Assert.True(BatchSlice.Of(8, 0, 1).IsWhole);
        Assert.Contains("--batch stays the global batch", Assert.Throws<ArgumentException>(() => BatchSlice.Of(2, 0, 4)).Message);
    }

    [Fact]
    public void A_missing_nccl_is_refused_naming_every_place_looked_and_the_variables_that_point_to_it()
    {
        string libtorch = Path.Combine(Path.GetTempPath(), "no-such-python", "site-packages", "torch", "lib");
        var candidates = NcclLibrary.Candidates(null, libtorch);
        Assert.Contains(Path.Combine(libtorch, "libnccl.so.2"), candidates);
        Assert.Contains(Path.GetFullPath(Path.Combine(libtorch, "..", "..", "nvidia", "nccl", "lib", "libnccl.so.2")), candidates);
        Assert.Equal(["/opt/nccl/libnccl.so.2"], NcclLibrary.Candidates("/opt/nccl/libnccl.so.2", libtorch));
        var missing = Assert.Throws<DllNotFoundException>(() => NcclLibrary.Load("/nonexistent/libnccl.so.2", libtorch));
        Assert.Contains("/nonexistent/libnccl.so.2", missing.Message);
        Assert.Contains("MIMFLOW_LIBTORCH", missing.Message);
        Assert.Contains(NcclLibrary.Variable, missing.Message);
        // A library that is not NCCL (here Open MPI's, where installed) is refused by the missing entry point.
        if (File.Exists("/usr/lib/x86_64-linux-gnu/libmpi.so.40"))
            Assert.ThrowsAny<Exception>(() => NcclLibrary.Load("/usr/lib/x86_64-linux-gnu/libmpi.so.40", null));
    }

    [Fact]
    public async Task Rendezvous_on_loopback_gives_every_rank_rank_zeros_bytes_and_a_clean_end_reports_no_loss()
    {
        int port = FreePort();
        byte[] id = Enumerable.Range(0, NcclLibrary.UniqueIdBytes).Select(i => (byte)(i * 7)).ToArray();
        var lost = new System.Collections.Concurrent.ConcurrentBag<string>();
        var joins = Enumerable.Range(0, 3).Select(rank => Task.Run(() =>
            TcpRendezvous.Join("127.0.0.1", port, rank, 3, rank == 0 ? id : null, TimeSpan.FromSeconds(30), lost.Add))).ToArray();
        var joined = await Task.WhenAll(joins).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.All(joined, j => Assert.Equal(id, j.Payload));
        foreach (var join in joined) join.Finish();
        await Task.Delay(300);
        foreach (var join in joined) join.Dispose();
        Assert.Empty(lost);
    }

    [Fact]
    public async Task A_rank_that_dies_after_the_rendezvous_is_named_to_rank_zero_and_to_the_survivors()
    {
        int port = FreePort();
        byte[] id = new byte[NcclLibrary.UniqueIdBytes];
        var told = new System.Collections.Concurrent.ConcurrentDictionary<int, string>();
        var zero = Task.Run(() => TcpRendezvous.Join("127.0.0.1", port, 0, 3, id, TimeSpan.FromSeconds(30), m => told[0] = m));
        var two = Task.Run(() => TcpRendezvous.Join("127.0.0.1", port, 2, 3, null, TimeSpan.FromSeconds(30), m => told[2] = m));
        // Rank 1 as a process that is then killed: it greets, reads the id, and its socket closes without a goodbye.
        using (var one = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            for (var deadline = DateTime.UtcNow.AddSeconds(20); ;)
            {
                try { one.Connect(IPAddress.Loopback, port); break; }
                catch (SocketException) when (DateTime.UtcNow < deadline) { await Task.Delay(100); }
            }
            var hello = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(hello, 0x4D494D46);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(4), 1);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(8), 3);
            one.Send(hello);
            var reply = new byte[5 + id.Length];
            for (int read = 0; read < reply.Length;) read += one.Receive(reply, read, reply.Length - read, SocketFlags.None);
            Assert.Equal(0, reply[0]);
            var r0 = await zero;
            var r2 = await two;
            one.Close();
            for (var deadline = DateTime.UtcNow.AddSeconds(10); told.Count < 2 && DateTime.UtcNow < deadline;) await Task.Delay(50);
            r0.Dispose();
            r2.Dispose();
        }
        Assert.Contains("rank 1 closed its connection", told.GetValueOrDefault(0));
        Assert.Contains("rank 1 was lost", told.GetValueOrDefault(2));
    }

    [Fact]
    public async Task Ranks_started_with_another_world_size_are_refused_by_the_rendezvous()
    {
        int port = FreePort();
        var zero = Task.Run(() => TcpRendezvous.Join("127.0.0.1", port, 0, 2, new byte[4], TimeSpan.FromSeconds(20), _ => { }));
        var one = Task.Run(() => TcpRendezvous.Join("127.0.0.1", port, 1, 3, null, TimeSpan.FromSeconds(20), _ => { }));
        var atZero = await Assert.ThrowsAnyAsync<Exception>(() => zero);
        var atOne = await Assert.ThrowsAnyAsync<Exception>(() => one);
        Assert.Contains("world size 3", atZero.Message);
        Assert.Contains("world size 3", atOne.Message);
    }

    [Fact]
    public async Task The_watchdog_ends_a_collective_that_waits_too_long_naming_it_and_leaves_a_quick_one_alone()
    {
        var fired = new TaskCompletionSource<string>();
        using var watchdog = new CollectiveWatchdog(TimeSpan.FromMilliseconds(300), rank: 1, m => fired.TrySetResult(m));
        using (watchdog.Arm("quick")) { }
        await Task.Delay(500);
        Assert.False(fired.Task.IsCompleted);
        string message;
        using (watchdog.Arm("gradients of step 7")) message = await fired.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Contains("rank 1", message);
        Assert.Contains("'gradients of step 7'", message);
        Assert.Contains(CollectiveWatchdog.TimeoutVariable, message);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
