using MimFlow.Cli.Reporting;
using Spectre.Console;

namespace MimFlow.Cli;

/// <summary>
/// Where a command writes: rich output (tables, progress) to <see cref="Console"/>, one-line errors to
/// <see cref="Error"/>, and, when a pipeline runs it as a stage, the one line that says what it did to
/// <see cref="Summary"/> (the run's closing table). <see cref="Settings"/> and <see cref="Telemetry"/> come from the
/// global options; a pipeline's stages inherit them.
/// </summary>
public sealed record CliContext(IAnsiConsole Console, TextWriter Error)
{
    public Action<string>? Summary { get; init; }

    /// <summary>The global output options; null until the command line is read (a stage inherits its pipeline's).</summary>
    public OutputSettings? Output { get; init; }

    internal OutputSettings Settings => Output ?? new OutputSettings();

    /// <summary>The Prometheus endpoint while <c>--metrics-port</c> serves one.</summary>
    internal CliTelemetry? Telemetry { get; init; }

    /// <summary>The clock of progress lines and stamps (tests give their own).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    public void Report(string whatItDid) => Summary?.Invoke(whatItDid);

    /// <summary>
    /// A line of running commentary (a stage starting, a benchmark's figure): as is in a terminal, time-stamped when
    /// the output is a log, a JSON object with <c>--log-format json</c>.
    /// </summary>
    public void Log(string text)
    {
        var format = Settings.LogFormat;
        if (format == LogFormat.Text && Console.Profile.Capabilities.Interactive) Console.WriteLine(text);
        else Console.Profile.Out.Writer.WriteLine(ProgressLog.Message(text, format, Time.GetUtcNow()));
    }
}
