using Microsoft.Win32.SafeHandles;
using MimFlow.Core.IO;

namespace MimFlow.Tests.Core;

/// <summary>The one retry policy: which errors are transient, how many attempts, and what a persistent fault says.</summary>
public sealed class TransientIoTests
{
    private static readonly TimeSpan Fast = TimeSpan.FromMilliseconds(1);

    [Fact]
    public void An_io_error_from_the_kernel_carries_its_errno_so_eio_is_told_from_other_errors()
    {
        // Reading /proc/self/mem at an unmapped address is a real EIO from the kernel.
        using SafeFileHandle handle = File.OpenHandle("/proc/self/mem");
        var error = Assert.ThrowsAny<IOException>(() => RandomAccess.Read(handle, new byte[16], 0));
        Assert.Equal(5, error.HResult);
        Assert.True(TransientIo.IsTransient(error));

        Assert.True(TransientIo.IsTransient(new IOException("stale", 116)));
        Assert.True(TransientIo.IsTransient(new IOException("timed out", 110)));
        Assert.True(TransientIo.IsTransient(new IOException("again", 11)));
        Assert.True(TransientIo.IsTransient(new TimeoutException()));
        Assert.False(TransientIo.IsTransient(new IOException("no space", 28)));
        Assert.False(TransientIo.IsTransient(new IOException("plain")));
        Assert.False(TransientIo.IsTransient(new FileNotFoundException("gone")));
        Assert.False(TransientIo.IsTransient(new UnauthorizedAccessException()));
        Assert.False(TransientIo.IsTransient(new InvalidDataException()));
        Assert.False(TransientIo.IsTransient(new PersistentIoException("f", "reading", 4, new IOException("x", 5))));
    }

    [Fact]
    public async Task Transient_errors_are_retried_with_the_attempt_number_logged_and_counted_and_a_persistent_one_names_the_file()
    {
        var log = new List<string>();
        var io = new TransientIo(attempts: 4, firstDelay: Fast, log: log.Add);
        var attempts = new List<int>();
        int result = await io.RunAsync("/data/shard.parquet", "reading row group 3", (attempt, _) =>
        {
            attempts.Add(attempt);
            if (attempt < 2) throw new IOException("Input/output error", 5);
            return Task.FromResult(42);
        });
        Assert.Equal(42, result);
        Assert.Equal([0, 1, 2], attempts);
        Assert.Equal(2, io.Retries);
        Assert.Equal(2, log.Count);
        Assert.All(log, line => Assert.Contains("/data/shard.parquet: reading row group 3: Input/output error", line));
        Assert.Contains("attempt 2 of 4", log[0]);

        var persistent = await Assert.ThrowsAsync<PersistentIoException>(() =>
            io.RunAsync<int>("/data/shard.parquet", "hashing", (_, _) => throw new IOException("Stale file handle", 116)));
        Assert.Contains("/data/shard.parquet: hashing failed 4 time(s)", persistent.Message);
        Assert.Contains("Stale file handle", persistent.Message);
        Assert.Equal(5, io.Retries);

        int tried = 0;
        Assert.Throws<FileNotFoundException>(() => io.Run("/x", "reading", _ =>
        {
            tried++;
            throw new FileNotFoundException("gone");
        }));
        Assert.Equal(1, tried);
    }

    [Fact]
    public void The_fault_double_strikes_the_first_operations_then_lets_them_through()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("a.bin");
        File.WriteAllBytes(path, new byte[100]);
        var files = new FaultyFiles(p => p == path, FaultAt.Read, failures: 2, afterBytes: 10);
        var io = new TransientIo(attempts: 3, firstDelay: Fast, log: _ => { }, files: files);
        byte[] read = io.Run(path, "reading", _ =>
        {
            using var stream = io.Files.OpenRead(path);
            var buffer = new byte[100];
            stream.ReadExactly(buffer.AsSpan(0, 8));
            stream.ReadExactly(buffer.AsSpan(8));
            return buffer;
        });
        Assert.Equal(100, read.Length);
        Assert.Equal(2, files.Struck);
        Assert.Equal(2, io.Retries);
    }
}
