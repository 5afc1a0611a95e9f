using System.Runtime.InteropServices;
using System.Text;

namespace MimFlow.Core.IO;

/// <summary>
/// The few POSIX calls .NET does not expose: the file type (.NET reports a FIFO or a character device as an ordinary
/// file of length 0, and opening a FIFO blocks in open(2) until a writer comes), a non-blocking open, realpath and the
/// raw bytes of directory entries (.NET decodes names as UTF-8 with replacement characters, which loses undecodable
/// bytes). glibc on Linux x64 and arm64, whose <c>struct stat</c> and <c>struct dirent</c> layouts are fixed by the ABI;
/// <see cref="Supported"/> is false elsewhere and callers fall back to what .NET can tell.
/// </summary>
internal static class UnixFiles
{
    private const string Libc = "libc.so.6";

    // open(2) flags, the same on x64 and arm64.
    private const int ONonBlock = 0x800;
    private const int ONoCtty = 0x100;
    private const int OCloExec = 0x80000;

    public const int ENOENT = 2;

    // glibc 2.33 added real stat/lstat/fstat exports; before, only the versioned __xstat family existed.
    private static readonly bool ModernStat = Probe("stat");

    public static bool Supported { get; } =
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64 && Probe("open");

    /// <summary>Offset of st_mode and st_size in glibc's struct stat: x64 (144 bytes) and the generic layout of arm64 (128).</summary>
    private static readonly (int Mode, int Size) StatLayout = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? (24, 48) : (16, 48);

    private static bool Probe(string symbol)
    {
        if (!OperatingSystem.IsLinux() || !NativeLibrary.TryLoad(Libc, out nint handle)) return false;
        return NativeLibrary.TryGetExport(handle, symbol, out _);
    }

    /// <summary>The type bits (S_IFMT) and size of <paramref name="path"/>, or the errno of the failure.</summary>
    public static (int Mode, long Size, int Errno) Stat(string path, bool followLinks)
    {
        byte[] buffer = new byte[256];
        int result = (followLinks, ModernStat) switch
        {
            (true, true) => stat(path, buffer),
            (false, true) => lstat(path, buffer),
            (true, false) => xstat(1, path, buffer),
            _ => lxstat(1, path, buffer),
        };
        if (result != 0) return (0, 0, Marshal.GetLastPInvokeError());
        return (BitConverter.ToInt32(buffer, StatLayout.Mode) & 0xF000, BitConverter.ToInt64(buffer, StatLayout.Size), 0);
    }

    public static (int Mode, long Size, int Errno) FStat(int descriptor)
    {
        byte[] buffer = new byte[256];
        int result = ModernStat ? fstat(descriptor, buffer) : fxstat(1, descriptor, buffer);
        if (result != 0) return (0, 0, Marshal.GetLastPInvokeError());
        return (BitConverter.ToInt32(buffer, StatLayout.Mode) & 0xF000, BitConverter.ToInt64(buffer, StatLayout.Size), 0);
    }

    /// <summary>open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC): never waits for a FIFO's writer, never takes a
    /// terminal. O_NONBLOCK changes nothing for regular files on Linux.</summary>
    public static (int Descriptor, int Errno) OpenReadNonBlocking(string path)
    {
        int descriptor = open(path, ONonBlock | ONoCtty | OCloExec, 0);
        return descriptor < 0 ? (-1, Marshal.GetLastPInvokeError()) : (descriptor, 0);
    }

    public static void Close(int descriptor) => _ = close(descriptor);

    /// <summary>flock(LOCK_SH | LOCK_NB): the advisory lock .NET takes on every FileStream, so a file another .NET
    /// process holds with FileShare.None is refused here as it would be there. 0, or the errno.</summary>
    public static int TryLockShared(int descriptor) => flock(descriptor, 1 | 4) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>The path with every link followed (realpath(3)), or null when it cannot be resolved (missing, a loop).</summary>
    public static string? RealPath(string path)
    {
        nint resolved = realpath(path, 0);
        if (resolved == 0) return null;
        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            free(resolved);
        }
    }

    /// <summary>The raw names of a folder's entries with their d_type (DT_DIR 4, DT_REG 8, DT_LNK 10, DT_UNKNOWN 0).</summary>
    public static List<(byte[] Name, byte Type)> RawEntries(string folder)
    {
        var entries = new List<(byte[], byte)>();
        nint directory = opendir(folder);
        if (directory == 0) return entries;
        try
        {
            while (readdir(directory) is var entry && entry != 0)
            {
                // struct dirent on LP64 glibc: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
                byte type = Marshal.ReadByte(entry, 18);
                int length = 0;
                while (Marshal.ReadByte(entry, 19 + length) != 0) length++;
                byte[] name = new byte[length];
                Marshal.Copy(entry + 19, name, 0, length);
                if (name is [(byte)'.'] or [(byte)'.', (byte)'.']) continue;
                entries.Add((name, type));
            }
        }
        finally
        {
            _ = closedir(directory);
        }
        return entries;
    }

    /// <summary>Whether the bytes are valid UTF-8 (what .NET can name without loss).</summary>
    public static bool IsUtf8(byte[] name) => System.Text.Unicode.Utf8.IsValid(name);

    /// <summary>A name's bytes as text, each byte that is not part of valid UTF-8 written as <c>\xHH</c>.</summary>
    public static string Escape(byte[] name)
    {
        var text = new StringBuilder();
        var rest = name.AsSpan();
        while (rest.Length > 0)
        {
            var status = System.Text.Rune.DecodeFromUtf8(rest, out var rune, out int consumed);
            if (status == System.Buffers.OperationStatus.Done)
            {
                if (rune.Value == '\\') text.Append("\\\\");
                else text.Append(rune.ToString());
            }
            else
            {
                for (int i = 0; i < Math.Max(1, consumed); i++) text.Append($"\\x{rest[i]:X2}");
            }
            rest = rest[Math.Max(1, consumed)..];
        }
        return text.ToString();
    }

    [DllImport(Libc, EntryPoint = "stat", SetLastError = true)]
    private static extern int stat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);

    [DllImport(Libc, EntryPoint = "lstat", SetLastError = true)]
    private static extern int lstat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);

    [DllImport(Libc, EntryPoint = "fstat", SetLastError = true)]
    private static extern int fstat(int descriptor, byte[] buffer);

    [DllImport(Libc, EntryPoint = "__xstat", SetLastError = true)]
    private static extern int xstat(int version, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);

    [DllImport(Libc, EntryPoint = "__lxstat", SetLastError = true)]
    private static extern int lxstat(int version, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);

    [DllImport(Libc, EntryPoint = "__fxstat", SetLastError = true)]
    private static extern int fxstat(int version, int descriptor, byte[] buffer);

    [DllImport(Libc, EntryPoint = "open", SetLastError = true)]
    private static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, int mode);

    [DllImport(Libc, EntryPoint = "close", SetLastError = true)]
    private static extern int close(int descriptor);

    [DllImport(Libc, EntryPoint = "flock", SetLastError = true)]
    private static extern int flock(int descriptor, int operation);

    [DllImport(Libc, EntryPoint = "realpath", SetLastError = true)]
    private static extern nint realpath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, nint resolved);

    [DllImport(Libc, EntryPoint = "free")]
    private static extern void free(nint pointer);

    [DllImport(Libc, EntryPoint = "opendir", SetLastError = true)]
    private static extern nint opendir([MarshalAs(UnmanagedType.LPUTF8Str)] string path);

    [DllImport(Libc, EntryPoint = "readdir", SetLastError = true)]
    private static extern nint readdir(nint directory);

    [DllImport(Libc, EntryPoint = "closedir")]
    private static extern int closedir(nint directory);
}
