using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;

namespace MimFlow.Training.Runs;

/// <summary>
/// <c>metrics.jsonl</c>: one JSON object per step (<c>step</c>, <c>loss</c>, <c>lr</c>, <c>images_per_second</c>,
/// objective terms …, and <c>time</c>, the wall clock in UTC), written line by line, and the same numbers as
/// TensorBoard scalars (<see cref="TensorBoardLog"/>). A resumed run first drops the lines after its checkpoint's
/// step, so every step appears exactly once (TensorBoard is told to drop them too).
/// <para>
/// Each line is one write at the offset where the file ends (this process is the run folder's only writer: its lock
/// says so), so after a transient I/O error the same bytes are written again at the same place: a partly written line
/// is overwritten, never doubled. Every line carries <c>world_size</c> (the ranks the step's global batch was spread
/// over); under data parallelism rank 0 writes the log and the other ranks hold a <see cref="Discard"/>ing one.
/// </para>
/// </summary>
public sealed class MetricsLog : IDisposable
{
    public const string FileName = "metrics.jsonl";
    private readonly Stream stream;
    private readonly TransientIo io;
    private readonly int worldSize;
    private readonly TensorBoardLog? tensorBoard;
    private readonly TimeProvider clock;
    private readonly Lock gate = new();
    private long end;

    private MetricsLog(Stream stream, string path, TransientIo io, int worldSize, TensorBoardLog? tensorBoard, TimeProvider clock)
    {
        this.stream = stream;
        this.io = io;
        this.worldSize = worldSize;
        this.tensorBoard = tensorBoard;
        this.clock = clock;
        Path = path;
        end = stream.Length;
    }

    public string Path { get; }

    /// <param name="keepThroughStep">Resume: keep the lines of steps ≤ this; null starts a new log.</param>
    /// <summary>A log that writes nothing: a data-parallel rank other than 0 keeps the same bookkeeping without a file.</summary>
    public static MetricsLog Discard(int worldSize) => new(Stream.Null, "", new TransientIo(), worldSize, null, TimeProvider.System);

    /// <param name="worldSize">Ranks of the run (1 for one process), written on every line.</param>
    /// <param name="io">Retries of transient I/O errors and how the file is opened; null: the defaults.</param>
    /// <param name="clock">The wall clock of the <c>time</c> field (tests pin it); null: the system's.</param>
    public static MetricsLog Open(string runDirectory, long? keepThroughStep, int worldSize = 1, TransientIo? io = null, TimeProvider? clock = null)
    {
        io ??= new TransientIo();
        clock ??= TimeProvider.System;
        string path = System.IO.Path.Combine(runDirectory, FileName);
        if (keepThroughStep is long last && File.Exists(path))
        {
            var kept = File.ReadLines(path).Where(line => line.Length > 0 && StepOf(line) is long step && step <= last).ToList();
            AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
        }
        else if (File.Exists(path)) File.Delete(path);
        var tensorBoard = TensorBoardLog.Open(runDirectory, keepThroughStep + 1, clock.GetUtcNow());
        return new MetricsLog(io.Files.OpenWrite(path), path, io, worldSize, tensorBoard, clock);
    }

    /// <summary>One step's line; non-finite numbers (a skipped step's loss) are written as null, which JSON allows.</summary>
    public void Write(IReadOnlyDictionary<string, object> values)
    {
        var now = clock.GetUtcNow();
        var entry = values.ToDictionary(p => p.Key, p => p.Value is double d && !double.IsFinite(d) ? null : p.Value);
        entry.TryAdd("world_size", worldSize);
        entry.TryAdd("time", now.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        if (tensorBoard is not null && values.TryGetValue("step", out var stepValue) && stepValue is long or int)
            tensorBoard.Scalars(Convert.ToInt64(stepValue, System.Globalization.CultureInfo.InvariantCulture), Numbers(values), now);
        byte[] line = System.Text.Encoding.UTF8.GetBytes(JsonSerializer.Serialize(entry) + "\n");
        lock (gate)
        {
            io.Run(Path, "appending a metrics line", _ =>
            {
                stream.Position = end;
                stream.Write(line);
                stream.Flush();
            });
            end += line.Length;
        }
    }

    public static IEnumerable<JsonObject> Read(string runDirectory)
    {
        string path = System.IO.Path.Combine(runDirectory, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no metrics (not a run folder, or no step finished yet)", path);
        foreach (string line in File.ReadLines(path))
            if (line.Length > 0 && JsonNode.Parse(line) is JsonObject entry) yield return entry;
    }

    /// <summary>
    /// The last <paramref name="lines"/> complete lines (oldest first), read from the end of the file: a status report
    /// of a run with millions of steps reads kilobytes. A line being written (no newline yet) is left out.
    /// </summary>
    public static IReadOnlyList<JsonObject> ReadTail(string runDirectory, int lines)
    {
        string path = System.IO.Path.Combine(runDirectory, FileName);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var found = new List<string>();
        long end = stream.Length;
        int window = 64 << 10;
        while (true)
        {
            long start = Math.Max(0, end - window);
            var buffer = new byte[end - start];
            stream.Position = start;
            stream.ReadExactly(buffer);
            string text = System.Text.Encoding.UTF8.GetString(buffer);
            int complete = text.LastIndexOf('\n');
            var split = complete < 0 ? [] : text[..complete].Split('\n');
            // Unless the window reaches the file's start, its first piece may be the tail of a longer line.
            var whole = start == 0 ? split : split.Skip(1).ToArray();
            if (whole.Count(l => l.Length > 0) >= lines || start == 0)
            {
                found = whole.Where(l => l.Length > 0).TakeLast(lines).ToList();
                break;
            }
            window *= 4;
        }
        var entries = new List<JsonObject>();
        foreach (string line in found)
        {
            try
            {
                if (JsonNode.Parse(line) is JsonObject entry) entries.Add(entry);
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}: a line that is not JSON ({e.Message})", e);
            }
        }
        return entries;
    }

    private static long? StepOf(string line)
    {
        try { return JsonNode.Parse(line)?["step"]?.GetValue<long>(); }
        catch (JsonException) { return null; }
    }

    /// <summary>Scalars outside the step lines (an epoch's evaluation: top-1, mIoU …), to TensorBoard only (they have files of their own).</summary>
    public void Scalars(long step, IReadOnlyDictionary<string, double> values) => tensorBoard?.Scalars(step, values, clock.GetUtcNow());

    /// <summary>The numeric values of a line, as TensorBoard plots them (the step and the epoch counter are its axes, not plots).</summary>
    private static IEnumerable<KeyValuePair<string, double>> Numbers(IReadOnlyDictionary<string, object> values) =>
        values.Where(p => p.Key is not ("step" or "epoch")).Select(p => p.Value switch
        {
            double d => new KeyValuePair<string, double>?(new(p.Key, d)),
            float f => new(p.Key, f),
            int i => new(p.Key, i),
            long l => new(p.Key, l),
            _ => null,
        }).OfType<KeyValuePair<string, double>>();

    public void Dispose()
    {
        stream.Dispose();
        tensorBoard?.Dispose();
    }
}
