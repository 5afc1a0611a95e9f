using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>
/// A read-only memory map of a checkpoint file: tensors are copied from the page cache straight into their
/// buffers, so a multi-GB checkpoint is never held twice in memory. Every range is checked against the file length.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile map;
    private readonly MemoryMappedViewAccessor view;
    private readonly byte* pointer;
    private bool disposed;

    private MappedFile(string path, long length)
    {
        Path = path;
        Length = length;
        map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* start = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
            pointer = start + view.PointerOffset;
        }
        catch
        {
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    public string Path { get; }

    public long Length { get; }

    /// <summary>Maps a non-empty file (an empty one cannot be mapped, and is no checkpoint either).</summary>
    public static MappedFile Open(string path)
    {
        long length = new FileInfo(path).Length;
        if (length == 0) throw new InvalidDataException($"{path}: the file is empty");
        return new MappedFile(path, length);
    }

    public bool Contains(long offset, long length) => offset >= 0 && length >= 0 && offset <= Length && length <= Length - offset;

    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        CheckRange(offset, length);
        return new ReadOnlySpan<byte>(pointer + offset, length);
    }

    /// <summary>The bytes as memory (for the pickle reader), at most 2 GiB.</summary>
    public ReadOnlyMemory<byte> Memory(long offset, int length)
    {
        CheckRange(offset, length);
        return new UnmanagedRange(pointer + offset, length).Memory;
    }

    public Stream Stream(long offset, long length)
    {
        CheckRange(offset, length);
        return new UnmanagedMemoryStream(pointer + offset, length);
    }

    private void CheckRange(long offset, long length)
    {
        // A read after disposal would touch unmapped memory: a crash, not an exception.
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!Contains(offset, length))
            throw new InvalidDataException($"{Path}: a record at byte {offset} of {length} bytes runs past the end of the file ({Length} bytes; truncated?)");
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        map.Dispose();
    }

    /// <summary>Memory over the map; valid while the file is open, which the checkpoint guarantees.</summary>
    private sealed class UnmanagedRange(byte* start, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(start, length);

        public override MemoryHandle Pin(int elementIndex = 0) => new(start + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
