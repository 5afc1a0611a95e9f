using Spectre.Console;

namespace MimFlow.Cli;

/// <summary>Where a command writes: rich output (tables, progress) to <see cref="Console"/>, one-line errors to <see cref="Error"/>.</summary>
public sealed record CliContext(IAnsiConsole Console, TextWriter Error);
