using Microsoft.Win32.SafeHandles;
using MimFlow.Core.IO;
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

/// <summary>A whole file (folder layouts): only a regular file (links followed) is opened, and never more than the
/// limit is read, whatever size the file reports (a FIFO would block the open, <c>/dev/zero</c> never ends).</summary>
internal sealed class FileBytes(string path) : ByteSource
{
    public string Path { get; } = path;

    public override async ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken)
    {
        try
        {
            return await RegularFile.ReadAllBytesAsync(Path, maxBytes, cancellationToken);
        }
        catch (NotARegularFileException e)
        {
            throw new BadImageException($"unreadable: {e.Reason}", e);
        }
        catch (FileTooLargeException e)
        {
            throw new BadImageException(e.Reported > e.Limit
                ? $"file of {e.Reported:N0} bytes exceeds the limit of {e.Limit:N0}"
                : $"file exceeds the limit of {e.Limit:N0} bytes though it reports {e.Reported:N0} (a file growing while read?)", e);
        }
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
        SafeFileHandle handle;
        try
        {
            handle = RegularFile.OpenHandle(path);
        }
        catch (NotARegularFileException e)
        {
            throw new BadImageException($"unreadable: {e.Message}", e);
        }
        using (handle)
        {
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
}

/// <summary>A sample the listing already found broken (no image member, a bad label, a damaged archive): reading it
/// refuses it with the listing's reason, so it is quarantined like any other bad input instead of stopping the run.</summary>
internal sealed class BrokenBytes(string reason) : ByteSource
{
    public override ValueTask<byte[]> ReadAsync(long maxBytes, CancellationToken cancellationToken) => throw new BadImageException(reason);
}
