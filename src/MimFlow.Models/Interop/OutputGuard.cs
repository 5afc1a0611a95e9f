namespace MimFlow.Models.Interop;

/// <summary>
/// Keeps a command from writing over what it reads. Paths are compared as the file system resolves them: absolute,
/// with every symbolic link along the way followed (a link to the model directory is the model directory), and
/// case-sensitively (Linux). Paths that do not exist yet resolve through their deepest existing folder.
/// </summary>
public static class OutputGuard
{
    /// <summary>More links than this on one path is a loop (Linux gives up at 40 as well).</summary>
    private const int MaxLinks = 40;

    /// <summary>The path with every existing component's links followed.</summary>
    public static string Resolve(string path)
    {
        int links = 0;
        return Resolve(Path.GetFullPath(path), ref links);
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> or lies inside it (both resolved).</summary>
    public static bool IsWithin(string path, string folder)
    {
        string resolvedPath = Resolve(path), resolvedFolder = Path.TrimEndingDirectorySeparator(Resolve(folder));
        return resolvedPath == resolvedFolder || resolvedPath.StartsWith(resolvedFolder + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    /// <summary>Whether two paths name the same file or folder once resolved.</summary>
    public static bool Same(string a, string b) => Path.TrimEndingDirectorySeparator(Resolve(a)) == Path.TrimEndingDirectorySeparator(Resolve(b));

    private static string Resolve(string full, ref int links)
    {
        string root = Path.GetPathRoot(full) ?? "/";
        string current = root;
        foreach (string part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            if (part == "..")
            {
                current = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(current)) ?? root;
                continue;
            }
            string next = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is string target)
            {
                if (++links > MaxLinks) throw new IOException($"{full}: too many symbolic links (a loop?)");
                // A relative target is relative to the link's folder; the target may itself hold links.
                current = Resolve(Path.GetFullPath(target, current), ref links);
            }
            else current = next;
        }
        return current;
    }
}
