namespace MimFlow.Cli;

/// <summary>A command line the parser accepted but whose values do not go together or out of range: exit 2, as a parse error.</summary>
public sealed class UsageException(string message) : ArgumentException(message);
