using System.CommandLine;
using MimFlow.Cli.Commands;
using MimFlow.Cli.Reporting;
using MimFlow.Datasets.Synthetic;
using MimFlow.Torch.Backend;

namespace MimFlow.Cli;

/// <summary>The <c>mimflow</c> command tree and its error policy: a bad argument or a failed command prints one
/// line naming what went wrong and exits non-zero (2 for usage, 1 for failures).</summary>
public static class MimFlowCli
{
    public const int UsageError = 2;
    public const int Failure = 1;

    /// <summary>Global: the CUDA libtorch folder (same as MIMFLOW_LIBTORCH). Each command tree gets its own option object.</summary>
    public const string LibTorchOptionName = "--libtorch";

    public static Command Build(CliContext context)
    {
        // A plain command named "mimflow" (not RootCommand, which takes the host's file name) keeps usage lines right
        // whether the program runs as MimFlow.Cli.dll, through dotnet run, or inside the tests.
        var root = new Command("mimflow", "MimFlow: masked image modeling (BEiT family) pipelines: data, pre-tokenization, pretraining, fine-tuning.");
        root.Options.Add(new System.CommandLine.Help.HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(new Option<string?>(LibTorchOptionName)
        {
            Description = "Folder of a CUDA libtorch (libc10, libtorch_cpu, libc10_cuda, libtorch_cuda, libtorch); same as MIMFLOW_LIBTORCH",
            Recursive = true,
        });
        OutputOptions.AddTo(root);
        root.Subcommands.Add(DoctorCommand.Create(context));
        root.Subcommands.Add(DatasetsCommand.Create(context));
        root.Subcommands.Add(ScanCommand.Create(context));
        root.Subcommands.Add(MasksCommand.Create(context));
        root.Subcommands.Add(ModelCommand.Create(context));
        root.Subcommands.Add(TokenizeCommand.Create(context));
        root.Subcommands.Add(ShardsCommand.Create(context));
        root.Subcommands.Add(PretrainCommand.Create(context));
        root.Subcommands.Add(PretrainCommand.CreatePlot(context));
        root.Subcommands.Add(TrainTokenizerCommand.Create(context));
        root.Subcommands.Add(FinetuneCommand.Create(context));
        root.Subcommands.Add(FinetuneCommand.CreateEval(context));
        root.Subcommands.Add(BenchCommand.Create(context));
        root.Subcommands.Add(RunCommand.Create(context));
        root.Subcommands.Add(RunCommand.CreateDemo(context));
        root.Subcommands.Add(StatusCommand.Create(context));
        return root;
    }

    public static async Task<int> RunAsync(string[] args, CliContext context, CancellationToken cancellationToken = default)
    {
        var parsed = Build(context).Parse(args);
        if (parsed.Errors.Count > 0)
        {
            string command = string.Join(' ', CommandPath(parsed.CommandResult).Prepend("mimflow"));
            // Unrecognised tokens first: they say what the user typed wrong; the rest follow on the same line.
            var messages = parsed.Errors.OrderBy(e => e.Message.Contains("Unrecognized", StringComparison.Ordinal) ? 0 : 1)
                .Select(e => string.Join(' ', e.Message.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(p => p.Trim())))
                .Distinct();
            context.Error.WriteLine($"mimflow: {string.Join(" ", messages)} (see '{command} --help')");
            return UsageError;
        }
        CliTelemetry? telemetry = null;
        try
        {
            if (context.Output is null)
            {
                // The global options shape every command's output: read them, then build the tree with them.
                var settings = OutputOptions.Read(parsed);
                // In a data-parallel job rank 0 alone reports, so it alone serves the port.
                if (settings.MetricsPort is int port && MimFlow.Training.Distributed.LaunchEnvironment.FromProcess().Rank == 0)
                    telemetry = CliTelemetry.Start(settings.MetricsHost, port);
                context = context with { Output = settings, Telemetry = telemetry };
                parsed = Build(context).Parse(args);
            }
            var configuration = new InvocationConfiguration
            {
                Output = context.Console.Profile.Out.Writer,
                Error = context.Error,
                EnableDefaultExceptionHandler = false,
            };
            return await parsed.InvokeAsync(configuration, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            context.Error.WriteLine("mimflow: cancelled");
            return 130;
        }
        catch (UsageException e)
        {
            context.Error.WriteLine($"mimflow: {e.Message} (see '{string.Join(' ', CommandPath(parsed.CommandResult).Prepend("mimflow"))} --help')");
            return UsageError;
        }
        catch (Exception e) when (e is TorchBackendException or ArgumentException or OutputFolderNotEmptyException
                                       or IOException or UnauthorizedAccessException or InvalidDataException
                                       or MimFlow.Core.Safetensors.SafetensorsFormatException or KeyNotFoundException
                                       or MimFlow.Pipelines.Definition.PipelineException)
        {
            context.Error.WriteLine($"mimflow: error: {e.Message}");
            return Failure;
        }
        catch (Exception e)
        {
            // A bug, not a user error: still one line (the stack only when MIMFLOW_DEBUG is set), never a crash.
            context.Error.WriteLine($"mimflow: unexpected {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            if (Environment.GetEnvironmentVariable("MIMFLOW_DEBUG") is not null) context.Error.WriteLine(e);
            return Failure;
        }
        finally
        {
            telemetry?.Dispose();
        }
    }

    public static TorchBackendOptions BackendOptions(ParseResult parsed) =>
        TorchBackendOptions.FromEnvironment(LibTorchOf(parsed));

    /// <summary>The --libtorch folder the user gave, or null.</summary>
    public static string? LibTorchOf(ParseResult parsed) =>
        parsed.RootCommandResult.Command.Options.OfType<Option<string?>>().FirstOrDefault(o => o.Name == LibTorchOptionName) is { } option ? parsed.GetValue(option) : null;

    private static IEnumerable<string> CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new Stack<string>();
        for (var current = result; current?.Parent is System.CommandLine.Parsing.CommandResult parent; current = parent)
            names.Push(current.Command.Name);
        return names;
    }
}
