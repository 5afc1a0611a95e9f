using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MimFlow.Core.IO;

/// <summary>What a path is, as stat(2) tells it.</summary>
public enum FileKind { Missing, Regular, Directory, SymbolicLink, BrokenLink, Fifo, CharacterDevice, BlockDevice, Socket, Unknown }

/// <summary>
/// Reads only regular files, and never more than a limit. A FIFO named <c>a.JPEG</c> would block open(2) until some
/// writer came (a hang), and a link to <c>/dev/zero</c> or <c>/dev/urandom</c> reports size 0 and never ends (memory
/// without bound); .NET cannot tell either from an empty file. So the type is checked before opening (stat, links
/// followed), the open itself cannot block (O_NONBLOCK) and the opened descriptor is checked again (fstat: nothing
/// swapped in between), and reads stop at the limit whatever size the file reports.
/// </summary>
public static class RegularFile
{
    private const int EWouldBlock = 11;
    private const int SIfIfo = 0x1000, SIfChr = 0x2000, SIfDir = 0x4000, SIfBlk = 0x6000, SIfReg = 0x8000, SIfLnk = 0xA000, SIfSock = 0xC000;

    /// <summary>The kind of <paramref name="path"/>; with <paramref name="followLinks"/>, what a link leads to
    /// (<see cref="FileKind.BrokenLink"/> when it leads nowhere).</summary>
    public static FileKind KindOf(string path, bool followLinks = true)
    {
        if (!UnixFiles.Supported)
        {
            // Elsewhere only what .NET tells: folders, links and files.
            var info = new FileInfo(path);
            if (!followLinks && info.LinkTarget is not null) return FileKind.SymbolicLink;
            return Directory.Exists(path) ? FileKind.Directory : info.Exists ? FileKind.Regular : FileKind.Missing;
        }
        var (mode, _, errno) = UnixFiles.Stat(path, followLinks);
        if (errno != 0)
        {
            if (followLinks && errno == UnixFiles.ENOENT && UnixFiles.Stat(path, followLinks: false) is { Errno: 0, Mode: SIfLnk }) return FileKind.BrokenLink;
            return errno == UnixFiles.ENOENT ? FileKind.Missing : FileKind.Unknown;
        }
        return KindOfMode(mode);
    }

    /// <summary>The kind in words, for refusals ("a FIFO (named pipe)").</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "missing",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.SymbolicLink => "a symbolic link",
        FileKind.BrokenLink => "a symbolic link to nothing (its target does not exist)",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        _ => "of an unknown file type",
    };

    /// <summary>
    /// Opens <paramref name="path"/> for reading if it is a regular file (links followed).
    /// </summary>
    /// <exception cref="NotARegularFileException">A folder, FIFO, device, socket or broken link: nothing was opened.</exception>
    /// <exception cref="FileNotFoundException">Missing.</exception>
    public static SafeFileHandle OpenHandle(string path)
    {
        if (!UnixFiles.Supported)
        {
            if (Directory.Exists(path)) throw new NotARegularFileException(path, FileKind.Directory);
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        var kind = KindOf(path);
        if (kind == FileKind.Missing) throw new FileNotFoundException($"{path}: no such file", path);
        if (kind != FileKind.Regular && kind != FileKind.Unknown) throw new NotARegularFileException(path, kind);
        var (descriptor, errno) = UnixFiles.OpenReadNonBlocking(path);
        if (descriptor < 0) throw ErrnoException(path, errno);
        var (mode, _, statErrno) = UnixFiles.FStat(descriptor);
        if (statErrno != 0 || mode != SIfReg)
        {
            UnixFiles.Close(descriptor);
            if (statErrno != 0) throw ErrnoException(path, statErrno);
            throw new NotARegularFileException(path, KindOfMode(mode));
        }
        // As .NET does: a file held exclusively (FileShare.None) is "in use", an error worth retrying (EAGAIN);
        // file systems without flock (some NFS mounts) are read without it.
        if (UnixFiles.TryLockShared(descriptor) == EWouldBlock)
        {
            UnixFiles.Close(descriptor);
            throw new IOException($"{path}: the file is being used by another process (it holds it exclusively)", EWouldBlock);
        }
        return new SafeFileHandle(descriptor, ownsHandle: true);
    }

    /// <summary>A read-only stream over <see cref="OpenHandle"/>.</summary>
    public static FileStream OpenRead(string path, int bufferSize = 4096) => new(OpenHandle(path), FileAccess.Read, bufferSize);

    /// <summary>The whole file, at most <paramref name="maxBytes"/> of it: a longer file is refused whatever size it
    /// reports (a device or a file growing while read).</summary>
    /// <exception cref="FileTooLargeException">More than <paramref name="maxBytes"/>.</exception>
    public static async Task<byte[]> ReadAllBytesAsync(string path, long maxBytes, CancellationToken cancellationToken = default)
    {
        maxBytes = Math.Min(maxBytes, Array.MaxLength - 1);
        using var handle = OpenHandle(path);
        long reported = RandomAccess.GetLength(handle);
        if (reported > maxBytes) throw new FileTooLargeException(path, reported, maxBytes);
        byte[] buffer = new byte[reported];
        int done = 0;
        while (true)
        {
            if (done == buffer.Length)
            {
                // Full at the reported size: one more byte says whether the file really ends here.
                if (done > maxBytes) throw new FileTooLargeException(path, reported, maxBytes);
                byte[] probe = new byte[1];
                if (await RandomAccess.ReadAsync(handle, probe, done, cancellationToken) == 0) return buffer;
                if (done + 1 > maxBytes) throw new FileTooLargeException(path, reported, maxBytes);
                Array.Resize(ref buffer, (int)Math.Min(maxBytes + 1, Math.Max(2L * buffer.Length, 4096)));
                buffer[done++] = probe[0];
                continue;
            }
            int read = await RandomAccess.ReadAsync(handle, buffer.AsMemory(done), done, cancellationToken);
            if (read == 0) return done == buffer.Length ? buffer : buffer[..done];
            done += read;
        }
    }

    /// <summary>As <see cref="ReadAllBytesAsync"/>, synchronously (small files: configurations, class lists).</summary>
    public static byte[] ReadAllBytes(string path, long maxBytes) =>
        Task.Run(() => ReadAllBytesAsync(path, maxBytes)).GetAwaiter().GetResult();

    /// <summary>The file as UTF-8 text (a byte order mark dropped), at most <paramref name="maxBytes"/>.</summary>
    public static string ReadAllText(string path, long maxBytes)
    {
        byte[] bytes = ReadAllBytes(path, maxBytes);
        var span = bytes.AsSpan();
        if (span.StartsWith("\uFEFF"u8)) span = span[3..];
        return System.Text.Encoding.UTF8.GetString(span);
    }

    /// <summary>The path with every link resolved (realpath), or null where it cannot be (missing, a loop).</summary>
    public static string? RealPath(string path)
    {
        if (UnixFiles.Supported) return UnixFiles.RealPath(path);
        try
        {
            var info = Directory.Exists(path) ? (FileSystemInfo)new DirectoryInfo(path) : new FileInfo(path);
            return info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// The entries of <paramref name="folder"/> whose names are not valid UTF-8, as text with each stray byte escaped
    /// (<c>bad\xFF.JPEG</c>), and their kind as the folder listing gives it (<see cref="FileKind.Unknown"/> where the file
    /// system does not say). .NET names such entries with replacement characters, a name that opens nothing. Empty
    /// where the platform offers no raw names.
    /// </summary>
    public static IReadOnlyList<(string Name, FileKind Kind)> UndecodableNames(string folder)
    {
        if (!UnixFiles.Supported) return [];
        return UnixFiles.RawEntries(folder)
            .Where(e => !UnixFiles.IsUtf8(e.Name))
            .Select(e => (UnixFiles.Escape(e.Name), e.Type switch
            {
                1 => FileKind.Fifo,
                2 => FileKind.CharacterDevice,
                4 => FileKind.Directory,
                6 => FileKind.BlockDevice,
                8 => FileKind.Regular,
                10 => FileKind.SymbolicLink,
                12 => FileKind.Socket,
                _ => FileKind.Unknown,
            }))
            .ToList();
    }

    private static FileKind KindOfMode(int mode) => mode switch
    {
        SIfReg => FileKind.Regular,
        SIfDir => FileKind.Directory,
        SIfLnk => FileKind.SymbolicLink,
        SIfIfo => FileKind.Fifo,
        SIfChr => FileKind.CharacterDevice,
        SIfBlk => FileKind.BlockDevice,
        SIfSock => FileKind.Socket,
        _ => FileKind.Unknown,
    };

    /// <summary>The exception .NET itself would raise for an errno (an IOException's HResult is the errno, which
    /// <see cref="TransientIo"/> reads).</summary>
    private static Exception ErrnoException(string path, int errno) => errno switch
    {
        UnixFiles.ENOENT => new FileNotFoundException($"{path}: no such file", path),
        1 or 13 => new UnauthorizedAccessException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}"),
        20 => new DirectoryNotFoundException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}"),
        _ => new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}", errno),
    };
}

/// <summary>A path that is not a regular file (a FIFO, a device, a socket, a folder, a broken link) where one was to be read.</summary>
public sealed class NotARegularFileException(string path, FileKind kind)
    : IOException($"{path}: not a regular file: it is {RegularFile.Describe(kind)}; only regular files are read")
{
    public string Path { get; } = path;
    public FileKind Kind { get; } = kind;

    /// <summary>The reason without the path (for quarantine lines, which name the file already).</summary>
    public string Reason => $"not a regular file: it is {RegularFile.Describe(Kind)}";
}

/// <summary>A file longer than the reader's limit (whatever size it reported).</summary>
public sealed class FileTooLargeException(string path, long reported, long limit)
    : IOException($"{path}: more than {limit:N0} bytes (it reports {reported:N0}); refused before reading it all")
{
    public string Path { get; } = path;
    public long Reported { get; } = reported;
    public long Limit { get; } = limit;
}
