using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;

namespace MimFlow.Training.Runs;

/// <summary>
/// <c>metrics.jsonl</c>: one JSON object per step (<c>step</c>, <c>loss</c>, <c>lr</c>, <c>images_per_second</c>,
/// objective terms …), written line by line. A resumed run first drops the lines after its checkpoint's step, so
/// every step appears exactly once.
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
    private readonly Lock gate = new();
    private long end;

    private MetricsLog(Stream stream, string path, TransientIo io, int worldSize)
    {
        this.stream = stream;
        this.io = io;
        this.worldSize = worldSize;
        Path = path;
        end = stream.Length;
    }

    public string Path { get; }

    /// <param name="keepThroughStep">Resume: keep the lines of steps ≤ this; null starts a new log.</param>
    /// <summary>A log that writes nothing: a data-parallel rank other than 0 keeps the same bookkeeping without a file.</summary>
    public static MetricsLog Discard(int worldSize) => new(Stream.Null, "", new TransientIo(), worldSize);

    /// <param name="worldSize">Ranks of the run (1 for one process), written on every line.</param>
    /// <param name="io">Retries of transient I/O errors and how the file is opened; null: the defaults.</param>
    public static MetricsLog Open(string runDirectory, long? keepThroughStep, int worldSize = 1, TransientIo? io = null)
    {
        io ??= new TransientIo();
        string path = System.IO.Path.Combine(runDirectory, FileName);
        if (keepThroughStep is long last && File.Exists(path))
        {
            var kept = File.ReadLines(path).Where(line => line.Length > 0 && StepOf(line) is long step && step <= last).ToList();
            AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
        }
        else if (File.Exists(path)) File.Delete(path);
        return new MetricsLog(io.Files.OpenWrite(path), path, io, worldSize);
    }

    /// <summary>One step's line; non-finite numbers (a skipped step's loss) are written as null, which JSON allows.</summary>
    public void Write(IReadOnlyDictionary<string, object> values)
    {
        var entry = values.ToDictionary(p => p.Key, p => p.Value is double d && !double.IsFinite(d) ? null : p.Value);
        entry.TryAdd("world_size", worldSize);
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

    private static long? StepOf(string line)
    {
        try { return JsonNode.Parse(line)?["step"]?.GetValue<long>(); }
        catch (JsonException) { return null; }
    }

    public void Dispose() => stream.Dispose();
}
