using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;

namespace MimFlow.Training.Runs;

/// <summary>
/// <c>metrics.jsonl</c>: one JSON object per step (<c>step</c>, <c>loss</c>, <c>lr</c>, <c>images_per_second</c>,
/// objective terms …), flushed line by line. A resumed run first drops the lines after its checkpoint's step, so
/// every step appears exactly once. Every line carries <c>world_size</c> (the ranks the step's global batch was
/// spread over); under data parallelism rank 0 writes the log and the other ranks hold a <see cref="Discard"/>ing one.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    public const string FileName = "metrics.jsonl";
    private readonly StreamWriter writer;
    private readonly int worldSize;

    private MetricsLog(StreamWriter writer, string path, int worldSize)
    {
        this.writer = writer;
        this.worldSize = worldSize;
        Path = path;
    }

    /// <summary>A log that writes nothing: a data-parallel rank other than 0 keeps the same bookkeeping without a file.</summary>
    public static MetricsLog Discard(int worldSize) => new(new StreamWriter(Stream.Null), "", worldSize);

    public string Path { get; }

    /// <param name="keepThroughStep">Resume: keep the lines of steps ≤ this; null starts a new log.</param>
    /// <param name="worldSize">Ranks of the run (1 for one process), written on every line.</param>
    public static MetricsLog Open(string runDirectory, long? keepThroughStep, int worldSize = 1)
    {
        string path = System.IO.Path.Combine(runDirectory, FileName);
        if (keepThroughStep is long last && File.Exists(path))
        {
            var kept = File.ReadLines(path).Where(line => line.Length > 0 && StepOf(line) is long step && step <= last).ToList();
            AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
        }
        else if (File.Exists(path)) File.Delete(path);
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        return new MetricsLog(new StreamWriter(stream) { AutoFlush = true }, path, worldSize);
    }

    /// <summary>One step's line; non-finite numbers (a skipped step's loss) are written as null, which JSON allows.</summary>
    public void Write(IReadOnlyDictionary<string, object> values)
    {
        var line = values.ToDictionary(p => p.Key, p => p.Value is double d && !double.IsFinite(d) ? null : p.Value);
        line.TryAdd("world_size", worldSize);
        writer.WriteLine(JsonSerializer.Serialize(line));
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

    public void Dispose() => writer.Dispose();
}
