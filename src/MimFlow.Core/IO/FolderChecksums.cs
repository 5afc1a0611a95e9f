using System.Security.Cryptography;
using System.Text.Json;

namespace MimFlow.Core.IO;

/// <summary>
/// The SHA-256 of every file of a folder, recorded in a file inside it when the folder is complete, and checked before
/// what it holds is used: a flipped byte or a truncated file is found before training resumes from it.
/// </summary>
public static class FolderChecksums
{
    public const string FileName = "checksums.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Records every file below <paramref name="folder"/> (paths '/'-separated, relative to it), last.</summary>
    /// <param name="opener">Opens the files to hash (default: the file system).</param>
    public static void Write(string folder, IFileOpener? opener = null)
    {
        opener ??= FileOpener.Instance;
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'))
            .Where(f => f != FileName)
            .Order(StringComparer.Ordinal)
            .ToDictionary(f => f, f => Sha256Of(Path.Combine(folder, f), opener), StringComparer.Ordinal);
        AtomicFile.WriteAllText(Path.Combine(folder, FileName), JsonSerializer.Serialize(new Record(files), Json));
    }

    /// <summary>
    /// Checks the recorded files (those below <paramref name="under"/> when given, e.g. "backbone/"): each present with
    /// its recorded SHA-256. Throws <see cref="InvalidDataException"/> naming the first file that differs.
    /// </summary>
    public static void Verify(string folder, string? under = null)
    {
        string path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
            throw new InvalidDataException($"{folder}: no {FileName}, so its files cannot be checked (written by an older MimFlow, or not completely); refusing to use it");
        Record? record;
        try { record = JsonSerializer.Deserialize<Record>(RegularFile.ReadAllText(path, MaxRecordBytes), Json); }
        catch (Exception e) when (e is JsonException or NotSupportedException) { throw new InvalidDataException($"{path}: not a checksum record ({e.Message})", e); }
        if (record?.Files is not { Count: > 0 } files) throw new InvalidDataException($"{path}: lists no files");
        foreach (var (name, sha) in files)
        {
            if (under is not null && !name.StartsWith(under, StringComparison.Ordinal)) continue;
            if (name.Split('/').Any(part => part is "" or "." or "..") || Path.IsPathRooted(name) || name.Contains('\\') || name.Contains('\0'))
                throw new InvalidDataException($"{path}: '{name}' is not a path inside the folder");
            if (sha is not { Length: 64 } || !sha.All(char.IsAsciiHexDigitLower))
                throw new InvalidDataException($"{path}: the SHA-256 recorded for {name} is not 64 lower-case hex digits: the record is damaged");
            string file = Path.Combine(folder, name.Replace('/', Path.DirectorySeparatorChar));
            if (!File.Exists(file)) throw new InvalidDataException($"{file}: missing (recorded in {path})");
            string actual = Sha256Of(file);
            if (actual != sha) throw new InvalidDataException($"{file}: SHA-256 {actual} differs from the {sha} recorded in {path}: the file changed or is corrupted");
        }
        if (under is not null) return;
        // A file the record does not know was not there when the folder was complete, or the record lost it: either
        // way its contents are unchecked.
        foreach (string file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
        {
            string name = Path.GetRelativePath(folder, file).Replace(Path.DirectorySeparatorChar, '/');
            if (name != FileName && !files.ContainsKey(name))
                throw new InvalidDataException($"{file}: not recorded in {path}, so it cannot be checked; refusing to use the folder");
        }
    }

    /// <summary>Largest checksum record read.</summary>
    private const long MaxRecordBytes = 64L << 20;

    public static string Sha256Of(string path) => Sha256Of(path, FileOpener.Instance);

    private static string Sha256Of(string path, IFileOpener opener)
    {
        using var stream = opener.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private sealed record Record(IReadOnlyDictionary<string, string> Files);
}
