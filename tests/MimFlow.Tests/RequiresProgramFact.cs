namespace MimFlow.Tests;

/// <summary>
/// A fact that needs a program from Debian's packages (installed by .ci/run): where the program is absent the test
/// reports as skipped with the reason and the package that provides it, never as passed.
/// </summary>
public sealed class RequiresProgramFactAttribute : FactAttribute
{
    public RequiresProgramFactAttribute(string program, string package)
    {
        if (Find(program) is null) Skip = $"{program} is not installed: apt-get install {package} (as .ci/run does) to run this test";
    }

    public static string? Find(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => Path.Combine(folder, program)).FirstOrDefault(File.Exists);
}
