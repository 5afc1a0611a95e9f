using System.CommandLine;
using System.Globalization;

namespace MimFlow.Cli.Reporting;

public enum LogFormat
{
    /// <summary>In a terminal, live bars; redirected, one time-stamped plain line per update.</summary>
    Text,

    /// <summary>One JSON object per line (progress, messages), terminal or not: for log collectors.</summary>
    Json,
}

/// <summary>How a command reports while it works: the global options every command takes, with their defaults.</summary>
public sealed record OutputSettings
{
    /// <summary>Least time between two progress lines of one task (0: every change).</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromSeconds(30);

    public LogFormat LogFormat { get; init; } = LogFormat.Text;

    /// <summary>Serve Prometheus metrics on this port while the command runs (rank 0 of a data-parallel job).</summary>
    public int? MetricsPort { get; init; }

    /// <summary>The interface to listen on: <c>+</c> is every interface, so a cluster's Prometheus can scrape the pod.</summary>
    public string MetricsHost { get; init; } = "+";
}

/// <summary>The global, recursive options behind <see cref="OutputSettings"/>.</summary>
internal static class OutputOptions
{
    public const string ProgressInterval = "--progress-interval";
    public const string LogFormatName = "--log-format";
    public const string MetricsPort = "--metrics-port";
    public const string MetricsHost = "--metrics-host";

    public static IReadOnlyList<string> Names => [ProgressInterval, LogFormatName, MetricsPort, MetricsHost];

    public static void AddTo(Command root)
    {
        var defaults = new OutputSettings();
        root.Options.Add(new Option<double?>(ProgressInterval)
        {
            Description = $"Seconds between progress lines when output is not a terminal or with --log-format json (default {defaults.ProgressInterval.TotalSeconds:0}; 0: every change)",
            Recursive = true,
        });
        var format = new Option<string?>(LogFormatName)
        {
            Description = "text (bars in a terminal, time-stamped lines otherwise) or json (one object per line, for log collectors) (default text)",
            Recursive = true,
        };
        format.AcceptOnlyFromAmong("text", "json");
        root.Options.Add(format);
        root.Options.Add(new Option<int?>(MetricsPort)
        {
            Description = "Serve Prometheus metrics (progress, images/s, rows, quarantined, step, loss, lr, input wait, memory) at http://HOST:PORT/metrics while the command runs",
            Recursive = true,
        });
        root.Options.Add(new Option<string?>(MetricsHost)
        {
            Description = $"Interface for --metrics-port: '+' for every interface (default), 'localhost' to keep it on this machine",
            Recursive = true,
        });
    }

    /// <summary>The settings the user typed, over <see cref="OutputSettings"/>' defaults; a bad value is a usage error.</summary>
    public static OutputSettings Read(ParseResult parsed)
    {
        var settings = new OutputSettings();
        if (Value<double?>(parsed, ProgressInterval) is double seconds)
        {
            if (!double.IsFinite(seconds) || seconds < 0 || seconds > TimeSpan.MaxValue.TotalSeconds / 2)
                throw new UsageException($"{ProgressInterval} must be a number of seconds ≥ 0, not {seconds.ToString(CultureInfo.InvariantCulture)}");
            settings = settings with { ProgressInterval = TimeSpan.FromSeconds(seconds) };
        }
        if (Value<string?>(parsed, LogFormatName) is string format) settings = settings with { LogFormat = format == "json" ? LogFormat.Json : LogFormat.Text };
        if (Value<int?>(parsed, MetricsPort) is int port)
        {
            if (port is < 1 or > 65535) throw new UsageException($"{MetricsPort} must be a TCP port in 1..65535, not {port}");
            settings = settings with { MetricsPort = port };
        }
        if (Value<string?>(parsed, MetricsHost) is string host)
        {
            if (string.IsNullOrWhiteSpace(host) || host.IndexOfAny(['/', ' ', '?', '#']) >= 0) throw new UsageException($"{MetricsHost}: '{host}' is not a host name or address");
            settings = settings with { MetricsHost = host };
        }
        return settings;
    }

    private static T? Value<T>(ParseResult parsed, string name) =>
        parsed.RootCommandResult.Command.Options.OfType<Option<T>>().FirstOrDefault(o => o.Name == name) is { } option ? parsed.GetValue(option) : default;
}
