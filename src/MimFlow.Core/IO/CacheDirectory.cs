namespace MimFlow.Core.IO;

/// <summary>
/// Where MimFlow keeps derived files it can always rebuild (e.g. the patched native library).
/// <c>MIMFLOW_CACHE_DIR</c> wins, then <c>$XDG_CACHE_HOME/mimflow</c>, then <c>~/.cache/mimflow</c>; when none of
/// them can be written, a per-user folder under the system temp folder.
/// </summary>
public static class CacheDirectory
{
    public const string EnvironmentVariable = "MIMFLOW_CACHE_DIR";

    public static string Resolve(string? explicitDirectory = null)
    {
        foreach (string candidate in Candidates(explicitDirectory))
        {
            try
            {
                Directory.CreateDirectory(candidate);
                string probe = Path.Combine(candidate, $".probe.{Environment.ProcessId}.{Guid.NewGuid():N}");
                File.WriteAllBytes(probe, []);
                File.Delete(probe);
                return candidate;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Not writable: try the next candidate.
            }
        }
        throw new IOException(
            $"No writable cache folder: tried {string.Join(", ", Candidates(explicitDirectory))}. " +
            $"Set {EnvironmentVariable} to a writable folder.");
    }

    private static IEnumerable<string> Candidates(string? explicitDirectory)
    {
        if (!string.IsNullOrWhiteSpace(explicitDirectory)) yield return Path.GetFullPath(explicitDirectory);
        string? fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment)) yield return Path.GetFullPath(fromEnvironment);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg)) yield return Path.Combine(xdg, "mimflow");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (!string.IsNullOrEmpty(home)) yield return Path.Combine(home, ".cache", "mimflow");
        yield return Path.Combine(Path.GetTempPath(), $"mimflow-cache-{Environment.UserName}");
    }
}
