using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;

namespace MimFlow.Cli.Reporting;

/// <summary>
/// <c>--metrics-port</c>: the command's progress and figures as Prometheus gauges, served by OpenTelemetry's
/// Prometheus exporter at <c>http://HOST:PORT/metrics</c> while the command runs. Every task's report becomes
/// <c>mimflow_progress_done</c>, <c>mimflow_progress_planned</c> and <c>mimflow_progress_rate</c> (units per second over
/// the last reports) labelled by task and unit, and each of its figures <c>mimflow_&lt;figure&gt;</c> labelled by task
/// (<c>mimflow_loss</c>, <c>mimflow_lr</c>, <c>mimflow_images_per_second</c>, <c>mimflow_input_wait</c>,
/// <c>mimflow_rows</c>, <c>mimflow_quarantined</c>, <c>mimflow_step</c>, …); <c>mimflow_memory_used_bytes</c> is this
/// process's resident memory (device <c>cpu</c>) and each GPU's memory in use (device <c>cuda:N</c>, from NVML).
/// </summary>
internal sealed class CliTelemetry : IDisposable
{
    private readonly Meter meter;
    private readonly MeterProvider provider;
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<(string Task, string Unit), double>> values = new(StringComparer.Ordinal);
    // Both written only under the gate (Observe); the gauges' values are read by the exporter's thread, hence concurrent.
    private readonly Dictionary<(string Task, string Unit), (double Done, long Ticks)> rateFrom = [];
    private readonly Dictionary<(string Task, string Unit), ProgressReport> latest = [];
    private readonly Lock gate = new();

    private CliTelemetry(Meter meter, MeterProvider provider)
    {
        this.meter = meter;
        this.provider = provider;
        meter.CreateObservableGauge("mimflow_memory_used_bytes", MemoryInUse, "By", "Memory in use: this process's resident memory (cpu) and each GPU's (cuda:N)");
    }

    /// <summary>Starts serving; a port that cannot be bound is an error that names it.</summary>
    public static CliTelemetry Start(string host, int port)
    {
        RequireFree(host, port);
        // A meter of its own name: concurrent commands in one process (the tests) each see only their own figures.
        var meter = new Meter($"MimFlow.Cli.Port{port}", typeof(CliTelemetry).Assembly.GetName().Version?.ToString());
        try
        {
            var provider = Sdk.CreateMeterProviderBuilder()
                .AddMeter(meter.Name)
                .AddPrometheusHttpListener(options =>
                {
                    options.Port = port;
                    options.ScopeInfoEnabled = false;
                    options.TranslationStrategy = PrometheusHttpListenerTranslationStrategy.UnderscoreEscapingWithoutSuffixes;
                    options.ScrapeResponseCacheDurationMilliseconds = 0;
                    options.ConfigureHttpListener = (o, listener) =>
                    {
                        listener.Prefixes.Clear();
                        listener.Prefixes.Add($"http://{host}:{o.Port}/metrics/");
                    };
                })
                .Build();
            return new CliTelemetry(meter, provider);
        }
        catch (Exception e) when (e is HttpListenerException or SocketException or InvalidOperationException)
        {
            meter.Dispose();
            throw new IOException($"--metrics-port {port}: cannot serve metrics on {host}:{port}: {e.Message}", e);
        }
    }

    /// <summary>Takes a task's report into the gauges (from any thread).</summary>
    public void Observe(string task, string unit, ProgressReport report)
    {
        var key = (task, unit);
        long now = Stopwatch.GetTimestamp();
        // Reports from several workers can arrive out of order: a gauge never steps back to an older count.
        lock (gate)
        {
            if (latest.TryGetValue(key, out var known) && report.Total == known.Total && report.Done < known.Done) return;
            latest[key] = report;
            SetAll(key, report, now);
        }
    }

    private void SetAll((string Task, string Unit) key, ProgressReport report, long now)
    {
        var (task, unit) = key;
        Set("mimflow_progress_done", key, report.Done, "Units of work done by the task", unit);
        if (report.Total > 0) Set("mimflow_progress_planned", key, report.Total, "Units of work the task has in all", unit);
        if (!rateFrom.TryGetValue(key, out var from)) rateFrom[key] = from = (report.Done, now);
        double seconds = Stopwatch.GetElapsedTime(from.Ticks, now).TotalSeconds;
        // Over at least a few seconds, so the gauge reads a rate and not one step's jitter.
        if (seconds >= 5 && report.Done > from.Done)
        {
            Set("mimflow_progress_rate", key, (report.Done - from.Done) / seconds, "Units of work per second over the last seconds", unit);
            rateFrom[key] = (report.Done, now);
        }
        foreach (var figure in report.Figures) Set("mimflow_" + MetricName(figure.Name), (task, ""), figure.Value, $"The task's {figure.Name}", null);
    }

    public void Dispose()
    {
        provider.Dispose();
        meter.Dispose();
    }

    private void Set(string name, (string Task, string Unit) key, double value, string description, string? unit)
    {
        var series = values.GetOrAdd(name, _ =>
        {
            var created = new ConcurrentDictionary<(string Task, string Unit), double>();
            lock (gate)
                meter.CreateObservableGauge(name, () => created.Select(p => new Measurement<double>(p.Value, Tags(p.Key))), null, description);
            return created;
        });
        series[key] = value;
    }

    private static KeyValuePair<string, object?>[] Tags((string Task, string Unit) key) =>
        key.Unit.Length == 0 ? [new("task", key.Task)] : [new("task", key.Task), new("unit", key.Unit)];

    /// <summary>Prometheus names: letters, digits and underscores (<c>eval/top1</c> → <c>eval_top1</c>).</summary>
    internal static string MetricName(string figure)
    {
        var name = new System.Text.StringBuilder(figure.Length);
        foreach (char c in figure) name.Append(char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '_');
        // Suffixes Prometheus keeps for counters and histograms: a gauge must not end in one.
        foreach (string reserved in new[] { "_total", "_count", "_sum", "_bucket" })
            if (name.ToString().EndsWith(reserved, StringComparison.Ordinal)) name.Append("_value");
        return name.ToString();
    }

    private static IEnumerable<Measurement<long>> MemoryInUse()
    {
        using var process = Process.GetCurrentProcess();
        yield return new Measurement<long>(process.WorkingSet64, new KeyValuePair<string, object?>("device", "cpu"));
        foreach (var gpu in MimFlow.Torch.Diagnostics.GpuInventory.Read())
            yield return new Measurement<long>(gpu.TotalMemoryBytes - gpu.FreeMemoryBytes, new KeyValuePair<string, object?>("device", $"cuda:{gpu.Index}"));
    }

    /// <summary>The exporter reports a busy port only to its event log: try the port first, so the user hears of it.</summary>
    private static void RequireFree(string host, int port)
    {
        var address = host is "+" or "*" ? IPAddress.Any : host == "localhost" ? IPAddress.Loopback : IPAddress.TryParse(host, out var parsed) ? parsed : null;
        if (address is null) return;
        try
        {
            using var probe = new TcpListener(address, port);
            probe.Start();
            probe.Stop();
        }
        catch (SocketException e)
        {
            throw new IOException($"--metrics-port {port}: cannot serve metrics on {host}:{port}: {e.Message}", e);
        }
    }
}
