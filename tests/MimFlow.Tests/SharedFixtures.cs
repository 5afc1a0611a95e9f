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

/// <summary>Files of this repository (pipelines, ops), found above the test assembly.</summary>
internal static class RepositoryFiles
{
    public static string PathOf(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MimFlow.sln"))) return Path.Combine([dir.FullName, .. parts]);
        throw new FileNotFoundException($"MimFlow.sln not found above {AppContext.BaseDirectory}");
    }
}
