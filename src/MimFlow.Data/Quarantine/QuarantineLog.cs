using System.Text.Json;

namespace MimFlow.Data.Quarantine;

/// <summary>One input refused by a stage.</summary>
/// <param name="Path">The file, relative to the dataset root.</param>
/// <param name="Reason">Why, in words.</param>
/// <param name="Stage">The stage that refused it (read, decode, annotation, …).</param>
/// <param name="SampleIndex">Its position in the dataset listing, where the stage knows it (resumable stages file
/// entries by it).</param>
public sealed record QuarantineEntry(string Path, string Reason, string Stage, int? SampleIndex = null);

/// <summary>
/// The one quarantine mechanism of every stage: bad inputs are recorded as JSON lines in <c>quarantine.jsonl</c>
/// (<c>path</c>, <c>reason</c>, <c>stage</c>) and counted, never silently dropped. Thread-safe; each line is
/// flushed as written, so the file is complete up to the last line even if the process dies.
/// </summary>
public sealed class QuarantineLog : IDisposable
{
    public const string FileName = "quarantine.jsonl";
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>One entry as its JSON line.</summary>
    public static string ToJsonLine(QuarantineEntry entry) => JsonSerializer.Serialize(entry, Json);

    private readonly Lock gate = new();
    private readonly StreamWriter? writer;
    private readonly List<QuarantineEntry> entries = [];

    /// <param name="folder">Where quarantine.jsonl is written (replacing an earlier one); null keeps entries in memory only.</param>
    public QuarantineLog(string? folder)
    {
        if (folder is null) return;
        Directory.CreateDirectory(folder);
        FilePath = Path.Combine(folder, FileName);
        writer = new StreamWriter(new FileStream(FilePath, FileMode.Create, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
    }

    public string? FilePath { get; }

    public int Count
    {
        get { lock (gate) return entries.Count; }
    }

    public IReadOnlyList<QuarantineEntry> Entries
    {
        get { lock (gate) return entries.ToList(); }
    }

    public void Add(QuarantineEntry entry)
    {
        lock (gate)
        {
            entries.Add(entry);
            writer?.WriteLine(ToJsonLine(entry));
        }
    }

    public void Dispose() => writer?.Dispose();
}
