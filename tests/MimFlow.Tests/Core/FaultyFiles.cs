using MimFlow.Core.IO;

namespace MimFlow.Tests.Core;

/// <summary>Where a <see cref="FaultyFiles"/> fault strikes.</summary>
internal enum FaultAt { Open, Read, Write }

/// <summary>
/// The file system with transient faults, as a network file system gives them: the first <c>failures</c> operations
/// of the given kind on matching files throw <c>IOException</c> with errno EIO (5) — an open, or a read or write once
/// <c>afterBytes</c> bytes of that stream have gone through; the first <c>skipOpens</c> opens of matching files are
/// left alone. <c>int.MaxValue</c> failures is a persistent fault.
/// </summary>
internal sealed class FaultyFiles(Func<string, bool> matches, FaultAt at, int failures, long afterBytes = 0, int skipOpens = 0) : IFileOpener
{
    private int left = failures;
    private int struck;
    private int opens;

    /// <summary>Faults raised so far.</summary>
    public int Struck => Volatile.Read(ref struck);

    public Stream OpenRead(string path) => Wrap(path, () => FileOpener.Instance.OpenRead(path));

    public Stream CreateNew(string path) => Wrap(path, () => FileOpener.Instance.CreateNew(path));

    public Stream OpenWrite(string path) => Wrap(path, () => FileOpener.Instance.OpenWrite(path));

    private Stream Wrap(string path, Func<Stream> open)
    {
        if (!matches(path) || Interlocked.Increment(ref opens) <= skipOpens) return open();
        if (at == FaultAt.Open) Strike(path);
        return new FaultyStream(open(), this, path);
    }

    /// <summary>Throws EIO while failures are left.</summary>
    private void Strike(string path)
    {
        if (Volatile.Read(ref left) <= 0) return;
        if (left != int.MaxValue && Interlocked.Decrement(ref left) < 0) return;
        Interlocked.Increment(ref struck);
        throw new IOException($"Input/output error : '{path}'", 5);
    }

    private sealed class FaultyStream(Stream inner, FaultyFiles owner, string path) : Stream
    {
        private long moved;

        private void Check(FaultAt kind, int count)
        {
            if (kind == owner.At && moved + count > owner.AfterBytes) owner.Strike(path);
            moved += count;
        }

        public override bool CanRead => inner.CanRead;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => inner.CanWrite;
        public override long Length => inner.Length;

        public override long Position
        {
            get => inner.Position;
            set => inner.Position = value;
        }

        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => inner.SetLength(value);

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            Check(FaultAt.Read, buffer.Length);
            return inner.Read(buffer);
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Check(FaultAt.Read, buffer.Length);
            return inner.ReadAsync(buffer, cancellationToken);
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            Check(FaultAt.Write, buffer.Length);
            inner.Write(buffer);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Check(FaultAt.Write, buffer.Length);
            return inner.WriteAsync(buffer, cancellationToken);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }

        public override async ValueTask DisposeAsync()
        {
            await inner.DisposeAsync();
            await base.DisposeAsync();
        }
    }

    private FaultAt At => at;
    private long AfterBytes => afterBytes;
}
