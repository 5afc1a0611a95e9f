using MimFlow.Core.IO;

namespace MimFlow.Data.Sources;

/// <summary>One entry a folder walk yields: a file to list, or something found and refused (<paramref name="Defect"/>),
/// which the listing keeps as a sample that reading refuses, so scan and check count it instead of dropping it.</summary>
/// <param name="RelativePath">'/'-separated below the walk's root prefix; an undecodable name as its escaped bytes.</param>
internal readonly record struct WalkEntry(string RelativePath, string? Defect);

/// <summary>
/// Walks a folder tree the way every folder layout lists it (ImageNet class folders, ADE20K images, the folder layout,
/// <c>datasets check</c>): depth first, each folder's files in code-point order, then its subfolders.
/// <list type="bullet">
/// <item>A link to a folder is never followed below the folder the walk starts at (a class folder, a layout's root):
/// <c>n01/loop -> ..</c> would list the whole split again, every image of it under n01's label. It is yielded as a
/// refused entry naming the link and its target.</item>
/// <item>A link to a file is listed like a file (where it points is the reader's business: only regular files are
/// read, see <see cref="FileBytes"/>); its label comes from the folder the link is in.</item>
/// <item>A name whose bytes are not UTF-8 cannot be opened through .NET (its name decodes with replacement
/// characters, and that string names no file): it is yielded as a refused entry under its escaped bytes
/// (<c>bad\xFF.JPEG</c>).</item>
/// </list>
/// Nothing is opened: entries are told apart by the folder listing and link targets only.
/// </summary>
internal static class FolderWalk
{
    public static IEnumerable<WalkEntry> FilesBelow(string folder, string relativePrefix, Func<string, bool> wanted)
    {
        string prefix = relativePrefix.Length == 0 ? "" : relativePrefix + "/";
        var files = new List<(string Name, string? Defect)>();
        var folders = new List<(string Name, string? Defect)>();
        bool undecodable = false;
        foreach (var info in new DirectoryInfo(folder).EnumerateFileSystemInfos())
        {
            string name = info.Name;
            // A name .NET decoded with replacement characters that then names nothing: its bytes are not UTF-8.
            if (name.Contains('\uFFFD') && !info.Exists && info.LinkTarget is null)
            {
                undecodable = true;
                continue;
            }
            if (info is DirectoryInfo)
            {
                folders.Add(info.LinkTarget is { } target
                    ? (name, $"{prefix}{name} is a link to a folder ({target}): not followed (links to folders inside a class or dataset folder never are, so no image is listed twice or under another folder's label)")
                    : (name, null));
            }
            else if (wanted(name) && !AtomicFile.IsTemporaryName(name)) files.Add((name, null));
        }
        if (undecodable)
            foreach (var (escaped, kind) in RegularFile.UndecodableNames(folder))
            {
                // A folder the walk cannot enter is reported whatever it holds; a file only if it would have been listed.
                bool isFolder = kind == FileKind.Directory;
                if (!isFolder && !wanted(escaped)) continue;
                string reason = $"undecodable {(isFolder ? "folder" : "file")} name: {escaped} (bytes shown as \\xHH) is not valid UTF-8, so it cannot be opened by name; rename it";
                (isFolder ? folders : files).Add((escaped, reason));
            }
        files.Sort((a, b) => CodePointComparer.Instance.Compare(a.Name, b.Name));
        folders.Sort((a, b) => CodePointComparer.Instance.Compare(a.Name, b.Name));
        foreach (var (name, defect) in files) yield return new WalkEntry(prefix + name, defect);
        foreach (var (name, defect) in folders)
        {
            if (defect is not null)
            {
                yield return new WalkEntry(prefix + name, defect);
                continue;
            }
            foreach (var nested in FilesBelow(Path.Combine(folder, name), prefix + name, wanted)) yield return nested;
        }
    }

    /// <summary>
    /// The class folders of an ImageNet split folder, in code-point order, each with the reason it is refused or null.
    /// A class folder may itself be a link (subsets are often assembled that way), but not one that leads to the split
    /// folder, to a folder holding it, or to (or into, or around) another class's folder: its images would be listed
    /// again under its label. The first class to claim a folder keeps it.
    /// </summary>
    public static List<(string Name, string? Defect)> ClassFolders(string splitFolder, string splitRelative)
    {
        var entries = new DirectoryInfo(splitFolder).EnumerateDirectories()
            .Select(d => (d.Name, Link: d.LinkTarget))
            .OrderBy(e => e.Name, CodePointComparer.Instance)
            .ToList();
        string split = Path.TrimEndingDirectorySeparator(RegularFile.RealPath(splitFolder) ?? Path.GetFullPath(splitFolder));
        // Real folders claim their own place first, whatever their order.
        var claimed = entries.Where(e => e.Link is null).Select(e => (e.Name, Real: Path.Combine(split, e.Name))).ToList();
        var result = new List<(string, string?)>();
        foreach (var (name, link) in entries)
        {
            if (link is null)
            {
                // A name .NET decoded with replacement characters names no folder: it cannot be entered.
                bool undecodable = name.Contains('\uFFFD') && !Directory.Exists(Path.Combine(splitFolder, name));
                result.Add((name, undecodable ? $"undecodable folder name: class folder {splitRelative}/{name} (\uFFFD for each undecodable byte) is not valid UTF-8, so it cannot be opened by name; rename it" : null));
                continue;
            }
            string where = $"class folder {splitRelative}/{name} is a link to {link}";
            string? real = RegularFile.RealPath(Path.Combine(splitFolder, name));
            string? defect = null;
            if (real is null) defect = $"{where}, which does not resolve (a loop?)";
            else if (real == split) defect = $"{where}: the split folder itself";
            else if (Within(split, real)) defect = $"{where}: {real}, an ancestor of the split folder";
            else if (claimed.FirstOrDefault(c => c.Real == real || Within(c.Real, real) || Within(real, c.Real)) is { Name: not null } other)
                defect = $"{where}: {real}, {(other.Real == real ? "the folder" : Within(real, other.Real) ? "inside the folder" : "a folder holding the folder")} of class {other.Name}";
            if (defect is null) claimed.Add((name, real!));
            result.Add((name, defect is null ? null : defect + "; its images are not listed under it (the class keeps its index)"));
        }
        return result;
    }

    /// <summary>Whether <paramref name="path"/> lies strictly inside <paramref name="folder"/> (both resolved).</summary>
    private static bool Within(string path, string folder) =>
        path.StartsWith(Path.TrimEndingDirectorySeparator(folder) + Path.DirectorySeparatorChar, StringComparison.Ordinal) || folder == "/" && path != "/";
}
