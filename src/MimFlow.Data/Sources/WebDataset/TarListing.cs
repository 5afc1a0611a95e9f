using System.Text;

namespace MimFlow.Data.Sources;

/// <summary>A regular file inside a tar: its name (long names and pax paths applied) and where its contents lie.</summary>
internal readonly record struct TarMember(string Name, long HeaderOffset, long DataOffset, long Size);

/// <summary>
/// Lists the regular files of a tar archive by reading headers only and seeking over contents (memory: one 512-byte
/// header, plus a GNU long name or pax record of at most <see cref="MaxMetadataBytes"/>). Understands ustar (name
/// prefix), GNU long names (<c>L</c>), pax extended headers (<c>x</c>: <c>path</c>, <c>size</c>; global <c>g</c>
/// headers are skipped), GNU base-256 sizes and v7 headers; directories, links and other entries are skipped.
/// <para>
/// The archive ends at the end-of-archive block or at the end of the file (a tar cut exactly between two members is
/// indistinguishable from a complete one). Damage — a partial header, a header whose checksum fails, contents that
/// run past the end of the file — stops the listing: the members before it are kept and <see cref="Damage"/> says
/// where and what. A file whose very first header is not a tar header is not an archive at all:
/// <see cref="InvalidDataException"/> naming it.
/// </para>
/// </summary>
internal sealed class TarListing(Stream stream, string name)
{
    public const int BlockSize = 512;

    /// <summary>Largest GNU long name or pax header read (a larger one is damage, not a reason to allocate).</summary>
    public const int MaxMetadataBytes = 1 << 20;

    private readonly byte[] header = new byte[BlockSize];

    /// <summary>Where the listing stopped early and why; null for an intact archive. <c>InLastMember</c>: the damage cuts
    /// short the contents of the last member listed (else it lies between members).</summary>
    public (long Offset, string Reason, bool InLastMember)? Damage { get; private set; }

    /// <summary>Bytes read from the stream so far: headers and metadata records (and whatever <see cref="ReadContents"/> read).</summary>
    public long BytesRead { get; private set; }

    public long Length { get; } = stream.Length;

    public IEnumerable<TarMember> Members()
    {
        long position = 0;
        string? longName = null, paxPath = null;
        long? paxSize = null;
        while (position < Length)
        {
            stream.Position = position;
            int read = ReadFully(header);
            if (read < BlockSize)
            {
                if (position == 0) throw NotATar($"it is {Length:N0} bytes long, shorter than one 512-byte tar header");
                Stop(position, $"truncated: a partial header ({read} of 512 bytes) at byte {position:N0}");
                yield break;
            }
            if (header.AsSpan().IndexOfAnyExcept((byte)0) < 0) yield break;
            if (!ChecksumMatches(header))
            {
                if (position == 0) throw NotATar("the first 512 bytes are not a tar header (checksum mismatch)");
                Stop(position, $"no valid tar header at byte {position:N0} (checksum mismatch); the rest of the file is not listed");
                yield break;
            }
            if (ParseNumber(header.AsSpan(124, 12)) is not long headerSize)
            {
                Stop(position, $"unreadable size field in the header at byte {position:N0}");
                yield break;
            }
            char type = (char)header[156];
            bool metadata = type is 'L' or 'K' or 'x' or 'g';
            long size = !metadata && paxSize is long overridden ? overridden : headerSize;
            long dataOffset = position + BlockSize;
            long next = dataOffset + (size + BlockSize - 1) / BlockSize * BlockSize;
            if (metadata)
            {
                if (type is 'L' or 'x')
                {
                    if (size > MaxMetadataBytes || dataOffset + size > Length)
                    {
                        Stop(position, size > MaxMetadataBytes
                            ? $"a {(type == 'L' ? "long name" : "pax header")} of {size:N0} bytes at byte {position:N0} exceeds {MaxMetadataBytes:N0}"
                            : $"truncated: the {(type == 'L' ? "long name" : "pax header")} at byte {position:N0} runs past the end of the file");
                        yield break;
                    }
                    byte[] record = ReadContents(dataOffset, (int)size);
                    if (type == 'L') longName = CString(record);
                    else if (!ParsePax(record, ref paxPath, ref paxSize))
                    {
                        Stop(position, $"malformed pax header at byte {position:N0}");
                        yield break;
                    }
                }
                position = next;
                continue;
            }
            string memberName = paxPath ?? longName ?? UstarName(header);
            longName = paxPath = null;
            paxSize = null;
            if (type is '0' or '\0' or '7')
            {
                yield return new TarMember(memberName, position, dataOffset, size);
                if (dataOffset + size > Length)
                {
                    Stop(position, $"truncated: member {memberName} (header at byte {position:N0}) needs {size:N0} bytes but the file ends after {Length - dataOffset:N0}", inLastMember: true);
                    yield break;
                }
            }
            position = next;
        }
    }

    /// <summary>Reads <paramref name="count"/> bytes at <paramref name="offset"/> (small members read during listing: labels).</summary>
    public byte[] ReadContents(long offset, int count)
    {
        stream.Position = offset;
        var bytes = new byte[count];
        int read = ReadFully(bytes);
        if (read < count) throw new EndOfStreamException($"{name}: {count:N0} bytes at {offset:N0} run past the end of the file");
        return bytes;
    }

    private void Stop(long offset, string reason, bool inLastMember = false) => Damage = (offset, reason, inLastMember);

    private InvalidDataException NotATar(string why) => new($"{name}: not a tar archive: {why}");

    private int ReadFully(Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int read = stream.Read(buffer[done..]);
            if (read == 0) break;
            done += read;
        }
        BytesRead += done;
        return done;
    }

    /// <summary>POSIX: the sum of the header's bytes with the checksum field read as spaces; old writers summed signed bytes.</summary>
    private static bool ChecksumMatches(byte[] block)
    {
        if (ParseNumber(block.AsSpan(148, 8)) is not long stored) return false;
        long unsigned = 0, signed = 0;
        for (int i = 0; i < BlockSize; i++)
        {
            byte b = i is >= 148 and < 156 ? (byte)' ' : block[i];
            unsigned += b;
            signed += (sbyte)b;
        }
        return stored == unsigned || stored == signed;
    }

    /// <summary>An octal field (space or NUL padded), or GNU base-256 when the high bit of the first byte is set.</summary>
    private static long? ParseNumber(ReadOnlySpan<byte> field)
    {
        if ((field[0] & 0x80) != 0)
        {
            if ((field[0] & 0x40) != 0) return null;
            long value = field[0] & 0x3F;
            foreach (byte b in field[1..])
            {
                if (value > (long.MaxValue >> 8)) return null;
                value = (value << 8) | b;
            }
            return value;
        }
        int i = 0;
        while (i < field.Length && field[i] is (byte)' ' or 0) i++;
        long result = 0;
        for (; i < field.Length && field[i] is >= (byte)'0' and <= (byte)'7'; i++)
        {
            if (result > long.MaxValue / 8) return null;
            result = result * 8 + (field[i] - '0');
        }
        for (; i < field.Length; i++)
            if (field[i] is not ((byte)' ' or 0)) return null;
        return result;
    }

    private static string UstarName(byte[] block)
    {
        string name = CString(block.AsSpan(0, 100));
        bool posix = block.AsSpan(257, 6).SequenceEqual("ustar\0"u8);
        string prefix = posix ? CString(block.AsSpan(345, 155)) : "";
        return prefix.Length > 0 ? prefix + "/" + name : name;
    }

    private static string CString(ReadOnlySpan<byte> bytes)
    {
        int end = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
    }

    /// <summary>pax records "<c>length key=value\n</c>"; takes <c>path</c> and <c>size</c>, ignores the rest.</summary>
    private static bool ParsePax(byte[] data, ref string? path, ref long? size)
    {
        int at = 0;
        while (at < data.Length && data[at] != 0)
        {
            int space = Array.IndexOf(data, (byte)' ', at);
            if (space < 0 || !int.TryParse(data.AsSpan(at, space - at), System.Globalization.NumberStyles.None, null, out int length)
                || length <= space - at || at + length > data.Length || data[at + length - 1] != '\n')
                return false;
            var record = data.AsSpan(space + 1, at + length - space - 2);
            int equals = record.IndexOf((byte)'=');
            if (equals < 0) return false;
            string key = Encoding.UTF8.GetString(record[..equals]);
            var value = record[(equals + 1)..];
            if (key == "path") path = Encoding.UTF8.GetString(value);
            else if (key == "size")
            {
                if (!long.TryParse(value, System.Globalization.NumberStyles.None, null, out long parsed)) return false;
                size = parsed;
            }
            at += length;
        }
        return true;
    }
}
