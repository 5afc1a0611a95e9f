using MimFlow.Data.Decoding;

namespace MimFlow.Data.Sources;

/// <summary>
/// Where one input's bytes are: a whole file, a byte range of a file (a tar member) or a cell of a Parquet column.
/// <see cref="Pipeline.SampleReader"/> wraps every read in the same retry, size limit and refusal rules, whatever the
/// source. Contract of <see cref="ReadAsync"/>: more than <c>maxBytes</c> or damaged data throws
/// <see cref="BadImageException"/> (final); a missing file <see cref="FileNotFoundException"/>; any other
/// <see cref="IOException"/> counts as transient and is retried.
/// </summary>
internal abstract class ByteSource
{
    public abstract ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken);
}

/// <summary>A whole file (folder layouts).</summary>
internal sealed class FileBytes(string path) : ByteSource
{
    public string Path { get; } = path;

    public override async ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken)
    {
        if (Directory.Exists(Path)) throw new UnauthorizedAccessException("it is a folder, not a file");
        var info = new FileInfo(Path);
        if (!info.Exists) throw new FileNotFoundException(null, Path);
        if (info.Length > maxBytes)
            throw new BadImageException($"file of {info.Length:N0} bytes exceeds the limit of {maxBytes:N0}");
        return await File.ReadAllBytesAsync(Path, cancellationToken);
    }
}

/// <summary>
/// <paramref name="length"/> bytes of a file from <paramref name="offset"/> (a tar member's contents): one positioned
/// read, so readers in parallel never share a file position.
/// </summary>
internal sealed class FileRangeBytes(string path, long offset, long length) : ByteSource
{
    public override async ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken)
    {
        if (length > maxBytes) throw new BadImageException($"member of {length:N0} bytes exceeds the limit of {maxBytes:N0}");
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
        long fileLength = RandomAccess.GetLength(handle);
        if (offset + length > fileLength)
            throw new BadImageException($"truncated member: its {length:N0} bytes from byte {offset:N0} run past the end of the file at {fileLength:N0}");
        var buffer = new byte[length];
        int done = 0;
        while (done < length)
        {
            int read = await RandomAccess.ReadAsync(handle, buffer.AsMemory(done), offset + done, cancellationToken);
            if (read == 0) throw new BadImageException($"truncated member: the file ended {length - done:N0} bytes early");
            done += read;
        }
        return buffer;
    }
}

/// <summary>A sample the listing already found broken (no image member, a bad label, a damaged archive): reading it
/// refuses it with the listing's reason, so it is quarantined like any other bad input instead of stopping the run.</summary>
internal sealed class BrokenBytes(string reason) : ByteSource
{
    public override ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken) => throw new BadImageException(reason);
}
