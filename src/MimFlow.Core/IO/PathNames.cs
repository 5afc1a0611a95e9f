namespace MimFlow.Core.IO;

public static class PathNames
{
    /// <summary>A single path component naming an entry of a folder: not empty, no separator, not "." or "..", nothing
    /// rooted. What a file we read may name when it names a neighbour (a manifest's shards, a run's checkpoint).</summary>
    public static bool IsPlainFileName(string name) =>
        !string.IsNullOrEmpty(name) && name is not ("." or "..") && name.IndexOfAny(['/', '\\', '\0']) < 0 && !Path.IsPathRooted(name)
        && name == Path.GetFileName(name);
}
