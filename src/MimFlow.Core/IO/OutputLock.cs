namespace MimFlow.Core.IO;

/// <summary>
/// One writer per output folder. The lock is an exclusive OS lock (flock on Linux) on <c>.mimflow.lock</c> in the
/// folder, so it holds across processes and machines sharing the file system where the file system honours flock,
/// and it is released by the kernel when the holder dies, even by SIGKILL: a crashed run never leaves a stale lock.
/// The file itself says who took it (process, host, command, time), for whoever finds it.
/// </summary>
public sealed class OutputLock : IDisposable
{
    public const string FileName = ".mimflow.lock";

    private readonly FileStream stream;

    private OutputLock(FileStream stream, string path)
    {
        this.stream = stream;
        Path = path;
    }

    public string Path { get; }

    /// <param name="what">What the holder does, for the lock file and for the refusal a second writer gets (e.g. "pretrain").</param>
    public static OutputLock Acquire(string folder, string what) => AcquireFile(System.IO.Path.Combine(folder, FileName), what, folder);

    /// <summary>A lock at a given file (the pipeline runner keeps its own under <c>.mimflow/</c>).</summary>
    public static OutputLock AcquireFile(string path, string what, string? folder = null)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
        }
        catch (IOException e)
        {
            throw new OutputInUseException($"{folder ?? path}: another mimflow process is writing here (it holds {path}); wait for it to finish or choose another output folder", e);
        }
        var note = System.Text.Encoding.UTF8.GetBytes(
            $"{{\"pid\": {Environment.ProcessId}, \"host\": \"{Environment.MachineName}\", \"what\": \"{what}\", \"since\": \"{DateTimeOffset.UtcNow:O}\"}}\n");
        stream.SetLength(0);
        stream.Write(note);
        stream.Flush();
        return new OutputLock(stream, path);
    }

    /// <summary>Whether some process holds the folder's lock now (for status reports; nothing is taken).</summary>
    public static bool IsHeld(string folder) => IsFileHeld(System.IO.Path.Combine(folder, FileName));

    /// <summary>Whether some process holds the lock at <paramref name="path"/> (one taken with <see cref="AcquireFile"/>).</summary>
    public static bool IsFileHeld(string path)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var probe = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    /// <summary>
    /// Who holds the folder's lock now, from the note in the lock file, or null when no one does (or the note cannot
    /// be read). The file is read without taking a lock of its own, so a status report never gets in a writer's way.
    /// </summary>
    public static LockHolder? Holder(string folder) => HolderOfFile(System.IO.Path.Combine(folder, FileName));

    /// <summary>Who holds the lock at <paramref name="path"/>, as <see cref="Holder"/>.</summary>
    public static LockHolder? HolderOfFile(string path)
    {
        if (!IsFileHeld(path) || !UnixFiles.Supported) return null;
        var (descriptor, errno) = UnixFiles.OpenReadNonBlocking(path);
        if (errno != 0) return null;
        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(descriptor, ownsHandle: true);
        var buffer = new byte[4096];
        int read = RandomAccess.Read(handle, buffer, 0);
        try
        {
            using var note = System.Text.Json.JsonDocument.Parse(buffer.AsMemory(0, read));
            var root = note.RootElement;
            return new LockHolder(root.GetProperty("pid").GetInt32(), root.GetProperty("host").GetString() ?? "", root.GetProperty("what").GetString() ?? "",
                DateTimeOffset.Parse(root.GetProperty("since").GetString() ?? "", System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    public void Dispose() => stream.Dispose();
}

/// <summary>The process that holds an output folder's lock: its id, host, command and since when.</summary>
public sealed record LockHolder(int Pid, string Host, string What, DateTimeOffset Since);

/// <summary>A second writer found an output folder in use.</summary>
public sealed class OutputInUseException(string message, Exception inner) : IOException(message, inner);
