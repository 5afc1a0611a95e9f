using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MimFlow.Core.IO;

namespace MimFlow.Pipelines.State;

/// <summary>
/// What a file or folder holds, as one hash of every file's relative path, size and last write time (contents are not
/// read: an ImageNet-scale output would take minutes to hash, and every writer here replaces files rather than editing
/// them in place, which moves the time). Unfinished temporaries are left out.
/// </summary>
public static class PathFingerprint
{
    /// <returns>The fingerprint, or null when nothing is at the path.</returns>
    public static string? Of(string path)
    {
        var text = new StringBuilder();
        if (File.Exists(path))
            Append(text, ".", new FileInfo(path));
        else if (Directory.Exists(path))
            foreach (var file in new DirectoryInfo(path).EnumerateFiles("*", SearchOption.AllDirectories)
                         .Where(f => !AtomicFile.IsTemporaryName(f.Name))
                         .OrderBy(f => f.FullName, StringComparer.Ordinal))
                Append(text, Path.GetRelativePath(path, file.FullName).Replace('\\', '/'), file);
        else
            return null;
        return Hash(text.ToString());
    }

    /// <summary>SHA-256 of a text, in lower-case hex.</summary>
    public static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private static void Append(StringBuilder text, string name, FileInfo file) =>
        text.Append(name).Append('\t').Append(file.Length.ToString(CultureInfo.InvariantCulture)).Append('\t')
            .Append(file.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture)).Append('\n');
}
