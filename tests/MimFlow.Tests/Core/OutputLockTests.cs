using System.Diagnostics;
using MimFlow.Core.IO;

namespace MimFlow.Tests.Core;

public sealed class OutputLockTests
{
    [Fact]
    public void A_second_writer_is_refused_until_the_first_lets_go_and_a_refusal_leaves_the_lock_in_place()
    {
        using var dir = new TemporaryDirectory();
        var first = OutputLock.Acquire(dir.Path, "pretrain");
        Assert.True(OutputLock.IsHeld(dir.Path));
        var refused = Assert.Throws<OutputInUseException>(() => OutputLock.Acquire(dir.Path, "tokenize"));
        Assert.Contains(dir.Path, refused.Message);
        // The refused attempt must not have removed the holder's file: a third writer is refused too.
        Assert.True(File.Exists(Path.Combine(dir.Path, OutputLock.FileName)));
        Assert.Throws<OutputInUseException>(() => OutputLock.Acquire(dir.Path, "tokenize"));
        first.Dispose();
        Assert.False(OutputLock.IsHeld(dir.Path));
        using var second = OutputLock.Acquire(dir.Path, "tokenize");
        Assert.True(OutputLock.IsHeld(dir.Path));
    }

    [Fact]
    public async Task A_killed_holder_leaves_no_stale_lock()
    {
        using var dir = new TemporaryDirectory();
        // Another process takes the lock by the same means (flock through .NET's FileShare.None) and is killed.
        string script = $"exec 9>'{Path.Combine(dir.Path, OutputLock.FileName)}'; flock -x 9; echo locked; sleep 60";
        using var holder = Process.Start(new ProcessStartInfo("bash", ["-c", script]) { RedirectStandardOutput = true })!;
        Assert.Equal("locked", await holder.StandardOutput.ReadLineAsync());
        Assert.Throws<OutputInUseException>(() => OutputLock.Acquire(dir.Path, "pretrain"));
        holder.Kill(entireProcessTree: true);
        await holder.WaitForExitAsync();
        using var after = OutputLock.Acquire(dir.Path, "pretrain");
        Assert.True(OutputLock.IsHeld(dir.Path));
    }
}
