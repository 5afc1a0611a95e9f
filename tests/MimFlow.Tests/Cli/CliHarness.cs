using System.Diagnostics;
using MimFlow.Cli;

namespace MimFlow.Tests.Cli;

/// <summary>Runs mimflow in this process (fast) or as a child process (for process-level behaviour).</summary>
internal static class CliHarness
{
    public sealed record Outcome(int ExitCode, string Output, string Error);

    public static async Task<Outcome> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await MimFlowCli.RunAsync(args, new CliContext(CliConsole.Plain(output), error));
        return new Outcome(code, output.ToString(), error.ToString());
    }

    public static async Task<Outcome> RunProcessAsync(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "MimFlow.Cli.dll"));
        foreach (string arg in args) start.ArgumentList.Add(arg);
        foreach (var (key, value) in environment) start.Environment[key] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        return new Outcome(process.ExitCode, await stdout, await stderr);
    }
}
