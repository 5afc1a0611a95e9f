using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary>The one progress display of long commands: a bar with percentage, elapsed and remaining time.</summary>
internal static class CliProgress
{
    /// <summary>Runs <paramref name="work"/> with one bar (which it updates) and shows it complete at the end.</summary>
    public static Task<T> RunAsync<T>(IAnsiConsole console, string name, double maxValue, Func<ProgressTask, Task<T>> work) =>
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .StartAsync(async progress =>
            {
                var task = progress.AddTask(name, maxValue: maxValue);
                var result = await work(task);
                task.Value = task.MaxValue;
                return result;
            });
}
