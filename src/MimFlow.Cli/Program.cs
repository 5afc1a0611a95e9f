using MimFlow.Cli;
using Spectre.Console;

return await MimFlowCli.RunAsync(args, new CliContext(AnsiConsole.Console, Console.Error));
