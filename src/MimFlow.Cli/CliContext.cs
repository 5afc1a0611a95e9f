using Spectre.Console;

namespace MimFlow.Cli;

/// <summary>
/// Where a command writes: rich output (tables, progress) to <see cref="Console"/>, one-line errors to
/// <see cref="Error"/>, and, when a pipeline runs it as a stage, the one line that says what it did to
/// <see cref="Summary"/> (the run's closing table).
/// </summary>
public sealed record CliContext(IAnsiConsole Console, TextWriter Error)
{
    public Action<string>? Summary { get; init; }

    public void Report(string whatItDid) => Summary?.Invoke(whatItDid);
}
