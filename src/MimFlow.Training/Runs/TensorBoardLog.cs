using System.Buffers.Binary;
using System.Text;

namespace MimFlow.Training.Runs;

/// <summary>
/// TensorBoard event files in a run folder (<c>tensorboard/events.out.tfevents.*</c>), written record by record in
/// TensorFlow's TFRecord framing (length, masked CRC-32C, payload, masked CRC-32C) around <c>Event</c> protos: scalar
/// summaries with their real wall time (seconds, double) and step (int64). Written here rather than through
/// TorchSharp's SummaryWriter, whose add_scalar takes an int32 step and a whole-second wall time. A resumed run opens
/// a new file whose first event is a SessionLog START at the resumed step: TensorBoard then drops the points of the
/// interrupted run at and after that step, as metrics.jsonl does.
/// </summary>
public sealed class TensorBoardLog : IDisposable
{
    public const string FolderName = "tensorboard";

    private readonly FileStream stream;

    private TensorBoardLog(FileStream stream, string path)
    {
        this.stream = stream;
        Path = path;
    }

    public string Path { get; }

    /// <param name="resumedAtStep">The first step this process will log, when it continues an earlier run.</param>
    public static TensorBoardLog Open(string runDirectory, long? resumedAtStep = null, DateTimeOffset? now = null)
    {
        var time = now ?? DateTimeOffset.UtcNow;
        string folder = System.IO.Path.Combine(runDirectory, FolderName);
        Directory.CreateDirectory(folder);
        string path = System.IO.Path.Combine(folder, $"events.out.tfevents.{time.ToUnixTimeSeconds()}.{Environment.MachineName}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        var log = new TensorBoardLog(new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read), path);
        log.WriteEvent(Event(WallTime(time), 0, fileVersion: "brain.Event:2"));
        if (resumedAtStep is long step) log.WriteEvent(Event(WallTime(time), step, sessionStart: true));
        return log;
    }

    /// <summary>One point per value at <paramref name="step"/>, all in one event; non-finite values are skipped (TensorBoard plots none of them).</summary>
    public void Scalars(long step, IEnumerable<KeyValuePair<string, double>> values, DateTimeOffset? time = null)
    {
        var summary = new List<byte>();
        Span<byte> single = stackalloc byte[4];
        foreach (var (tag, value) in values)
        {
            if (!double.IsFinite(value)) continue;
            var entry = new List<byte>();
            Field(entry, 1, Encoding.UTF8.GetBytes(tag));
            entry.Add(0x15); // field 2, 32-bit: simple_value
            BinaryPrimitives.WriteSingleLittleEndian(single, (float)value);
            entry.AddRange(single.ToArray());
            Field(summary, 1, entry.ToArray());
        }
        if (summary.Count == 0) return;
        WriteEvent(Event(WallTime(time ?? DateTimeOffset.UtcNow), step, summary: summary.ToArray()));
    }

    private static double WallTime(DateTimeOffset time) => time.ToUnixTimeMilliseconds() / 1000.0 + time.Ticks % TimeSpan.TicksPerMillisecond / 1e7;

    private static byte[] Event(double wallTime, long step, string? fileVersion = null, byte[]? summary = null, bool sessionStart = false)
    {
        var message = new List<byte> { 0x09 }; // field 1, 64-bit: wall_time
        Span<byte> number = stackalloc byte[8];
        BinaryPrimitives.WriteDoubleLittleEndian(number, wallTime);
        message.AddRange(number.ToArray());
        message.Add(0x10); // field 2, varint: step
        Varint(message, (ulong)step);
        if (fileVersion is not null) Field(message, 3, Encoding.UTF8.GetBytes(fileVersion));
        if (summary is not null) Field(message, 5, summary);
        if (sessionStart) Field(message, 6, [0x08, 0x01]); // SessionLog { status: START }
        return message.ToArray();
    }

    private void WriteEvent(byte[] payload)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Crc32C.Masked(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, Crc32C.Masked(payload));
        stream.Write(header);
        stream.Write(payload);
        stream.Write(footer);
        // Each record reaches the file before the next step, so a watching TensorBoard and a crash both see whole records.
        stream.Flush();
    }

    private static void Field(List<byte> message, int number, byte[] bytes)
    {
        Varint(message, (ulong)(number << 3 | 2));
        Varint(message, (ulong)bytes.Length);
        message.AddRange(bytes);
    }

    private static void Varint(List<byte> message, ulong value)
    {
        for (; value >= 0x80; value >>= 7) message.Add((byte)(value | 0x80));
        message.Add((byte)value);
    }

    public void Dispose() => stream.Dispose();
}

/// <summary>CRC-32C (Castagnoli), as TFRecord frames use it, and TensorFlow's masking of it.</summary>
public static class Crc32C
{
    private static readonly uint[] Table = Enumerable.Range(0, 256).Select(i =>
    {
        uint crc = (uint)i;
        for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        return crc;
    }).ToArray();

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }

    public static uint Masked(ReadOnlySpan<byte> data)
    {
        uint crc = Compute(data);
        return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
    }
}
