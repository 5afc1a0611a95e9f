using Spectre.Console;

namespace MimFlow.Cli.Reporting;

/// <summary>
/// The one progress display of long commands. In a terminal with text logs: a live bar (percentage, elapsed,
/// remaining, the shown figures). Otherwise (a batch job's log, a pipe, <c>--log-format json</c>): the lines of
/// <see cref="ProgressLog"/>. Either way every report also updates the Prometheus gauges when
/// <c>--metrics-port</c> serves them.
/// </summary>
internal static class CliProgress
{
    /// <param name="task">The task's name in lines and metrics (<c>tokenize</c>, <c>pretrain</c>).</param>
    /// <param name="unit">What is counted (<c>images</c>, <c>steps</c>).</param>
    /// <param name="work">Runs the task; it reports through the action it is given (from any thread).</param>
    public static async Task<T> RunAsync<T>(CliContext context, string task, string unit, Func<Action<ProgressReport>, Task<T>> work)
    {
        var settings = context.Settings;
        bool bar = settings.LogFormat == LogFormat.Text && context.Console.Profile.Capabilities.Interactive;
        if (bar)
        {
            return await context.Console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .StartAsync(async progress =>
                {
                    var line = progress.AddTask(task, maxValue: 1);
                    var result = await work(report =>
                    {
                        context.Telemetry?.Observe(task, unit, report);
                        if (report.Total > 0) line.MaxValue = report.Total;
                        line.Value = Math.Min(line.MaxValue, Math.Max(line.Value, report.Done));
                        line.Description = Markup.Escape(Describe(task, unit, report));
                    });
                    line.Value = line.MaxValue;
                    return result;
                });
        }
        var log = new ProgressLog(context.Console.Profile.Out.Writer, task, unit, settings.ProgressInterval, settings.LogFormat, context.Time);
        using var stop = new CancellationTokenSource();
        var ticks = settings.ProgressInterval > TimeSpan.Zero ? TickAsync(log, settings.ProgressInterval, context.Time, stop.Token) : Task.CompletedTask;
        bool succeeded = false;
        try
        {
            var result = await work(report =>
            {
                context.Telemetry?.Observe(task, unit, report);
                log.Report(report);
            });
            succeeded = true;
            return result;
        }
        finally
        {
            await stop.CancelAsync();
            await ticks;
            log.Finish(succeeded);
        }
    }

    /// <summary>The bar's label: the task, the count and the shown figures.</summary>
    private static string Describe(string task, string unit, ProgressReport report)
    {
        string count = report.Total > 0 ? $"{report.Done:0}/{report.Total:0} {unit}" : $"{report.Done:0} {unit}";
        var figures = report.Figures.Where(f => f.Shown).Select(f => $"{f.Name.Replace('_', ' ')} {f.Value.ToString(f.Format, System.Globalization.CultureInfo.InvariantCulture)}");
        return string.Join(' ', new[] { task, count }.Concat(figures));
    }

    private static async Task TickAsync(ProgressLog log, TimeSpan interval, TimeProvider time, CancellationToken cancellationToken)
    {
        // Often enough that a held-back line is at most a second late, rarely enough to cost nothing.
        var period = TimeSpan.FromSeconds(Math.Clamp(interval.TotalSeconds / 4, 0.05, 1));
        using var timer = new PeriodicTimer(period, time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken)) log.Tick();
        }
        catch (OperationCanceledException)
        {
        }
    }
}
