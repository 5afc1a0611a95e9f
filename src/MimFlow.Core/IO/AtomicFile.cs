namespace MimFlow.Core.IO;

/// <summary>
/// Writes files so that a reader never sees a half-written file under its final name: the bytes go to a
/// unique temporary file in the same folder, are flushed to disk, and the temporary file is renamed over the
/// final name (rename is atomic within one file system). Concurrent writers of the same content are safe:
/// each renames its own complete copy.
/// </summary>
public static class AtomicFile
{
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        string temporary = TemporaryNameFor(path);
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            DeleteQuietly(temporary);
        }
    }

    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>Lets <paramref name="write"/> fill a temporary file, then publishes it under <paramref name="path"/>.</summary>
    public static void Write(string path, Action<string> write)
    {
        string temporary = TemporaryNameFor(path);
        try
        {
            write(temporary);
            using (var stream = new FileStream(temporary, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
                stream.Flush(flushToDisk: true);
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            DeleteQuietly(temporary);
        }
    }

    /// <summary>A name beside <paramref name="path"/> that no other process or thread uses, and that ends like the
    /// original (so that writers choosing a format by extension still see it).</summary>
    public static string TemporaryNameFor(string path)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string unique = $".{Path.GetFileNameWithoutExtension(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial";
        return Path.Combine(directory, unique + Path.GetExtension(path));
    }

    /// <summary>True for the temporary names <see cref="TemporaryNameFor"/> makes, so listings can skip them.</summary>
    public static bool IsTemporaryName(string fileName) =>
        fileName.StartsWith('.') && fileName.Contains(".partial", StringComparison.Ordinal);

    private static void DeleteQuietly(string path)
    {
        try
        {
            if (File.Exists(path)) File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: a leftover temporary file never carries a final name, so it cannot be mistaken for output.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
