using MimFlow.Cli;

return await MimFlowCli.RunAsync(args, new CliContext(CliConsole.ForProcess(), Console.Error));
