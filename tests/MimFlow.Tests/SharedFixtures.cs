namespace MimFlow.Tests;

/// <summary>Files from ../shared/fixtures beside the repository (present for developers and CI).</summary>
internal static class SharedFixtures
{
    public static string PathOf(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine([dir.FullName, "shared", "fixtures", .. parts]);
            if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"shared/fixtures/{string.Join('/', parts)} was not found above {AppContext.BaseDirectory}; the repository must sit beside ../shared.");
    }
}
