namespace MimFlow.Cli;

/// <summary>
/// An option value a command cannot use, found in its action (values that do not go together, a check that needs the
/// file system): the CLI reports it like a parse error, one line naming the option, exit code 2.
/// </summary>
public sealed class UsageException(string message) : ArgumentException(message);
