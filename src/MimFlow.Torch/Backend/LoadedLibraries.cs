using System.Runtime.InteropServices;
using MimFlow.Torch.Elf;

namespace MimFlow.Torch.Backend;

/// <summary>Reads which file the dynamic loader actually uses for a library name in this process.</summary>
public static class LoadedLibraries
{
    /// <summary>
    /// The version names defined by the copy of <paramref name="libraryFileName"/> that this process binds to
    /// (loading it by name first, as the dynamic loader would for a DT_NEEDED entry); null if it cannot be found.
    /// </summary>
    public static IReadOnlySet<string>? DefinedVersions(string libraryFileName)
    {
        if (!NativeLibrary.TryLoad(libraryFileName, out _)) return null;
        string? path = MappedPath(libraryFileName);
        if (path is null) return null;
        try
        {
            return ElfImage.Read(path).VersionDefinitions.ToHashSet(StringComparer.Ordinal);
        }
        catch (Exception e) when (e is ElfFormatException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The path of a mapped file whose name is <paramref name="libraryFileName"/> or that name plus a version suffix.</summary>
    public static string? MappedPath(string libraryFileName)
    {
        const string maps = "/proc/self/maps";
        if (!File.Exists(maps)) return null;
        foreach (string line in File.ReadLines(maps))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            string path = line[slash..];
            string name = Path.GetFileName(path);
            if (name == libraryFileName || name.StartsWith(libraryFileName + ".", StringComparison.Ordinal)) return path;
        }
        return null;
    }
}
