using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>One member of a zip archive: where its bytes lie in the file and how they are stored.</summary>
internal sealed record ZipMember(string Name, long DataOffset, long CompressedSize, long Size, bool Deflated, uint Crc32);

/// <summary>
/// The central directory of a zip archive (torch.save and TorchScript write one), read from the mapped file so
/// that stored members can be copied without a stream in between. PyTorch stores members uncompressed and
/// 64-byte aligned; deflated members (an archive re-packed by another tool) are read through a decompressor.
/// Zip64 records are followed, as archives over 4 GiB need them. Every offset and size is checked against the
/// file before use, so a truncated or corrupt archive is an error, not a crash.
/// </summary>
internal static class ZipDirectory
{
    private const uint EndOfDirectorySignature = 0x06054b50, Zip64LocatorSignature = 0x07064b50, Zip64EndSignature = 0x06064b50;
    private const uint CentralHeaderSignature = 0x02014b50, LocalHeaderSignature = 0x04034b50;
    private const int EndOfDirectorySize = 22, MaxCommentSize = 0xFFFF;

    public static bool LooksLikeZip(ReadOnlySpan<byte> head) => head.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(head) == LocalHeaderSignature;

    public static IReadOnlyDictionary<string, ZipMember> Read(MappedFile file)
    {
        long end = FindEndOfDirectory(file);
        var record = file.Span(end, EndOfDirectorySize);
        long count = BinaryPrimitives.ReadUInt16LittleEndian(record[10..]);
        long directorySize = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]);
        long directoryOffset = BinaryPrimitives.ReadUInt32LittleEndian(record[16..]);
        if (count == 0xFFFF || directorySize == 0xFFFFFFFF || directoryOffset == 0xFFFFFFFF)
            (count, directorySize, directoryOffset) = ReadZip64End(file, end);
        if (!file.Contains(directoryOffset, directorySize) || directoryOffset + directorySize > end)
            throw Corrupt(file, $"the central directory (byte {directoryOffset}, {directorySize} bytes) lies outside the archive");

        var members = new Dictionary<string, ZipMember>(StringComparer.Ordinal);
        long position = directoryOffset, directoryEnd = directoryOffset + directorySize;
        for (long i = 0; i < count; i++)
        {
            if (directoryEnd - position < 46) throw Corrupt(file, "the central directory ends inside an entry");
            var header = file.Span(position, 46);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != CentralHeaderSignature) throw Corrupt(file, $"no central directory entry at byte {position}");
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(header[8..]);
            ushort method = BinaryPrimitives.ReadUInt16LittleEndian(header[10..]);
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(header[16..]);
            long compressed = BinaryPrimitives.ReadUInt32LittleEndian(header[20..]);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(header[24..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(header[28..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(header[30..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(header[32..]);
            long localOffset = BinaryPrimitives.ReadUInt32LittleEndian(header[42..]);
            long entryLength = 46L + nameLength + extraLength + commentLength;
            if (directoryEnd - position < entryLength) throw Corrupt(file, "the central directory ends inside an entry");
            string name = Encoding.UTF8.GetString(file.Span(position + 46, nameLength));
            if ((flags & 1) != 0) throw Corrupt(file, $"'{name}' is encrypted");
            if (method is not (0 or 8)) throw Corrupt(file, $"'{name}' uses compression method {method} (only stored and deflated members are read)");
            (size, compressed, localOffset) = ApplyZip64Extra(file, file.Span(position + 46 + nameLength, extraLength), size, compressed, localOffset, name);
            long dataOffset = DataOffsetOf(file, localOffset, name);
            if (!file.Contains(dataOffset, compressed) || dataOffset + compressed > directoryOffset)
                throw Corrupt(file, $"'{name}' ({compressed} bytes at byte {dataOffset}) runs past its archive");
            if (method == 0 && compressed != size) throw Corrupt(file, $"'{name}' is stored but its sizes differ ({compressed} and {size})");
            members[name] = new ZipMember(name, dataOffset, compressed, size, method == 8, crc);
            position += entryLength;
        }
        return members;
    }

    /// <summary>A member's whole content (pickles, small records), checked against its CRC-32.</summary>
    public static byte[] ReadAll(MappedFile file, ZipMember member, long limit)
    {
        if (member.Size > limit) throw Corrupt(file, $"'{member.Name}' has {member.Size} bytes, over the {limit}-byte limit for a record");
        var bytes = new byte[member.Size];
        Copy(file, member, 0, bytes);
        if (Crc32(bytes) != member.Crc32) throw Corrupt(file, $"'{member.Name}' fails its CRC-32 check (corrupt archive)");
        return bytes;
    }

    /// <summary>Bytes [offset, offset + destination.Length) of the member's content into <paramref name="destination"/>.</summary>
    public static void Copy(MappedFile file, ZipMember member, long offset, Span<byte> destination)
    {
        if (offset < 0 || offset > member.Size || destination.Length > member.Size - offset)
            throw Corrupt(file, $"'{member.Name}' has {member.Size} bytes; bytes {offset}..{offset + destination.Length} were asked for");
        if (!member.Deflated)
        {
            file.Span(member.DataOffset + offset, destination.Length).CopyTo(destination);
            return;
        }
        using var inflater = new DeflateStream(file.Stream(member.DataOffset, member.CompressedSize), CompressionMode.Decompress);
        try
        {
            SkipExactly(inflater, offset);
            inflater.ReadExactly(destination);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException)
        {
            throw Corrupt(file, $"'{member.Name}' does not inflate to its {member.Size} bytes ({e.Message})");
        }
    }

    private static void SkipExactly(Stream stream, long count)
    {
        var scratch = new byte[(int)Math.Min(count, 1 << 20)];
        while (count > 0)
        {
            int chunk = (int)Math.Min(count, scratch.Length);
            stream.ReadExactly(scratch, 0, chunk);
            count -= chunk;
        }
    }

    private static long FindEndOfDirectory(MappedFile file)
    {
        if (file.Length < EndOfDirectorySize) throw Corrupt(file, "too short for a zip archive");
        long lowest = Math.Max(0, file.Length - EndOfDirectorySize - MaxCommentSize);
        for (long position = file.Length - EndOfDirectorySize; position >= lowest; position--)
        {
            var candidate = file.Span(position, EndOfDirectorySize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(candidate) == EndOfDirectorySignature
                && position + EndOfDirectorySize + BinaryPrimitives.ReadUInt16LittleEndian(candidate[20..]) == file.Length)
                return position;
        }
        throw Corrupt(file, "no end-of-central-directory record (a truncated or damaged zip archive)");
    }

    private static (long Count, long Size, long Offset) ReadZip64End(MappedFile file, long end)
    {
        if (end < 20) throw Corrupt(file, "zip64 sizes without a zip64 locator");
        var locator = file.Span(end - 20, 20);
        if (BinaryPrimitives.ReadUInt32LittleEndian(locator) != Zip64LocatorSignature) throw Corrupt(file, "zip64 sizes without a zip64 locator");
        long recordOffset = ToLong(file, BinaryPrimitives.ReadUInt64LittleEndian(locator[8..]));
        var record = file.Span(recordOffset, 56);
        if (BinaryPrimitives.ReadUInt32LittleEndian(record) != Zip64EndSignature) throw Corrupt(file, "the zip64 end record is missing");
        return (ToLong(file, BinaryPrimitives.ReadUInt64LittleEndian(record[32..])), ToLong(file, BinaryPrimitives.ReadUInt64LittleEndian(record[40..])),
            ToLong(file, BinaryPrimitives.ReadUInt64LittleEndian(record[48..])));
    }

    /// <summary>Zip64's extra field holds, in this order, the sizes and offset whose 32-bit fields are saturated.</summary>
    private static (long Size, long Compressed, long Offset) ApplyZip64Extra(MappedFile file, ReadOnlySpan<byte> extra, long size, long compressed, long offset, string name)
    {
        while (extra.Length >= 4)
        {
            ushort id = BinaryPrimitives.ReadUInt16LittleEndian(extra);
            int length = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
            if (extra.Length - 4 < length) throw Corrupt(file, $"'{name}' has a truncated extra field");
            var body = extra.Slice(4, length);
            if (id == 1)
            {
                int at = 0;
                if (size == 0xFFFFFFFF) size = NextZip64Field(file, body, ref at, name);
                if (compressed == 0xFFFFFFFF) compressed = NextZip64Field(file, body, ref at, name);
                if (offset == 0xFFFFFFFF) offset = NextZip64Field(file, body, ref at, name);
            }
            extra = extra[(4 + length)..];
        }
        return (size, compressed, offset);
    }

    private static long NextZip64Field(MappedFile file, ReadOnlySpan<byte> body, ref int at, string name)
    {
        if (body.Length - at < 8) throw Corrupt(file, $"'{name}' has a short zip64 extra field");
        long value = ToLong(file, BinaryPrimitives.ReadUInt64LittleEndian(body[at..]));
        at += 8;
        return value;
    }

    private static long DataOffsetOf(MappedFile file, long localOffset, string name)
    {
        if (!file.Contains(localOffset, 30)) throw Corrupt(file, $"'{name}' has its local header outside the file");
        var local = file.Span(localOffset, 30);
        if (BinaryPrimitives.ReadUInt32LittleEndian(local) != LocalHeaderSignature) throw Corrupt(file, $"'{name}' has no local header at byte {localOffset}");
        return localOffset + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local[26..]) + BinaryPrimitives.ReadUInt16LittleEndian(local[28..]);
    }

    private static long ToLong(MappedFile file, ulong value) => value <= long.MaxValue ? (long)value : throw Corrupt(file, $"a zip64 field holds {value}, beyond any file");

    private static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        // Bitwise CRC-32 (IEEE, reflected): the records checked this way are pickles and a few bytes, not storages.
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0xEDB88320 & (uint)-(int)(crc & 1));
        }
        return ~crc;
    }

    private static InvalidDataException Corrupt(MappedFile file, string reason) => new($"{file.Path}: not a readable zip archive: {reason}");
}
