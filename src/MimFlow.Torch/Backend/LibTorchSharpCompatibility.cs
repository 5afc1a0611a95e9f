using System.Security.Cryptography;
using MimFlow.Core.IO;
using MimFlow.Torch.Elf;

namespace MimFlow.Torch.Backend;

/// <summary>
/// Decides whether TorchSharp's libLibTorchSharp.so loads as shipped on this system and, when it would not only
/// because of needed versions that nothing binds, provides a weak-versioned copy in the cache folder. The original
/// file (in the NuGet cache or the program's folder) is never modified.
/// </summary>
public static class LibTorchSharpCompatibility
{
    private const string CacheSubfolder = "torchsharp-compat";

    /// <summary>The file to load and the fix made, for the library at <paramref name="originalPath"/>.</summary>
    /// <param name="definedVersions">Versions defined by the system library of a given file name (see
    /// <see cref="WeakVersionPatch.Plan"/>); the default inspects the libraries this process loads.</param>
    public static (string PathToLoad, CompatibilityFix Fix) Prepare(
        string originalPath, string? cacheDirectory, Func<string, IReadOnlySet<string>?>? definedVersions = null)
    {
        byte[] original = File.ReadAllBytes(originalPath);
        var plan = WeakVersionPatch.Plan(ElfImage.Parse(original, originalPath), definedVersions ?? LoadedLibraries.DefinedVersions);
        if (!plan.NeedsFix) return (originalPath, CompatibilityFix.NotNeeded);
        if (!plan.CanFix)
        {
            string blocking = string.Join(", ", plan.Blocking.Select(m => $"{m.Need.Library} {m.Need.Version} (used by {string.Join(", ", m.Symbols.Take(3))})"));
            throw new TorchBackendException(
                $"{originalPath} needs library versions this system lacks and that are really used: {blocking}. " +
                "Install a newer libstdc++ (GCC 13 or later) or run on a newer distribution.");
        }

        var weakened = plan.Missing.Select(m => m.Need).ToList();
        byte[] patched = WeakVersionPatch.Apply(original, weakened);
        string folder = Path.Combine(CacheDirectory.Resolve(cacheDirectory), CacheSubfolder, Convert.ToHexStringLower(SHA256.HashData(patched))[..24]);
        string copy = Path.Combine(folder, Path.GetFileName(originalPath));
        EnsureCopy(copy, patched);
        return (copy, new CompatibilityFix(true, weakened.Select(n => $"{n.Library}:{n.Version}").ToList(), copy));
    }

    /// <summary>
    /// The folder name is the hash of the content, so a file found there is reused only when its bytes match;
    /// several processes starting at once each publish a complete copy by atomic rename, never a partial one.
    /// </summary>
    private static void EnsureCopy(string path, byte[] content)
    {
        if (File.Exists(path) && SameContent(path, content)) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        AtomicFile.WriteAllBytes(path, content);
    }

    private static bool SameContent(string path, byte[] content)
    {
        try
        {
            return new FileInfo(path).Length == content.Length && SHA256.HashData(File.ReadAllBytes(path)).AsSpan().SequenceEqual(SHA256.HashData(content));
        }
        catch (IOException)
        {
            return false;
        }
    }
}
