using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MimFlow.Cli.Reporting;

/// <summary>
/// Progress as lines for a log that no one watches live (a batch job's output, a pipe, a log collector): the first
/// report at once, then at most one line per interval and only when the work moved; a line when the work has not
/// moved for an interval (so a stalled job is seen as stalled, not dead); a closing line. Each line has the UTC time,
/// done/total, percentage, the rate since the previous line, the ETA at the rate since the first report, and the
/// task's figures. Text or one JSON object per line; never ANSI codes.
/// </summary>
internal sealed class ProgressLog
{
    private readonly TextWriter output;
    private readonly string task;
    private readonly string unit;
    private readonly TimeSpan interval;
    private readonly LogFormat format;
    private readonly TimeProvider time;
    private readonly Lock gate = new();
    private readonly DateTimeOffset started;

    private ProgressReport? latest;
    private DateTimeOffset latestAt;
    private (double Done, DateTimeOffset At)? first;
    private (double Done, double Total, DateTimeOffset At)? printed;
    private DateTimeOffset lastLine;
    private DateTimeOffset movedAt;
    private bool finished;

    public ProgressLog(TextWriter output, string task, string unit, TimeSpan interval, LogFormat format, TimeProvider time)
    {
        this.output = output;
        this.task = task;
        this.unit = unit;
        this.interval = interval;
        this.format = format;
        this.time = time;
        started = time.GetUtcNow();
        movedAt = started;
        if (format == LogFormat.Json) WriteJson(started, "start", 0, 0, null, null, TimeSpan.Zero, null, []);
        else Write($"{Stamp(started)} {task} started", started);
    }

    public void Report(ProgressReport report)
    {
        lock (gate)
        {
            if (finished) return;
            // Reports may arrive out of order (Progress<T> posts to the thread pool): an older one of the same total is stale.
            if (latest is { } known && report.Total == known.Total && report.Done < known.Done) return;
            var now = time.GetUtcNow();
            if (latest is null || report.Done != latest.Done) movedAt = now;
            latest = report;
            latestAt = now;
            first ??= (report.Done, now);
            if (printed is null || (report.Done != printed.Value.Done || report.Total != printed.Value.Total) && now - printed.Value.At >= interval)
                WriteProgress(now);
        }
    }

    /// <summary>Called on a timer: writes a report that was held back, or says the work has not moved for an interval.</summary>
    public void Tick()
    {
        lock (gate)
        {
            if (finished) return;
            var now = time.GetUtcNow();
            if (interval == TimeSpan.Zero || now - lastLine < interval) return;
            if (latest is not null && printed is { } p && (latest.Done != p.Done || latest.Total != p.Total)) WriteProgress(now);
            // A step may take longer than an interval: say so only when it takes twice as long, then once per interval.
            else if (now - movedAt >= 2 * interval) WriteStalled(now);
        }
    }

    /// <summary>The closing line: done with the whole run's rate, or stopped where it was.</summary>
    public void Finish(bool succeeded)
    {
        lock (gate)
        {
            if (finished) return;
            finished = true;
            var now = time.GetUtcNow();
            var elapsed = now - started;
            var report = latest ?? new ProgressReport(0, 0);
            double done = succeeded && report.Total > 0 ? Math.Max(report.Done, report.Total) : report.Done;
            double? rate = first is { } f && now > f.At && done > f.Done ? (done - f.Done) / (now - f.At).TotalSeconds : null;
            if (format == LogFormat.Json)
            {
                WriteJson(now, succeeded ? "done" : "stopped", done, report.Total, rate, null, elapsed, null, report.Figures);
                return;
            }
            var line = new StringBuilder();
            line.Append(Stamp(now)).Append(' ').Append(task).Append(succeeded ? " done " : " stopped at ");
            AppendCount(line, done, report.Total);
            line.Append(succeeded ? " in " : " after ").Append(Duration(elapsed));
            if (rate is double r) line.Append(", ").Append(Rate(r));
            AppendFigures(line, report.Figures);
            Write(line.ToString(), now);
        }
    }

    /// <summary>A time-stamped line (or JSON object) of free text: a stage starting, a benchmark's result.</summary>
    public static string Message(string text, LogFormat format, DateTimeOffset now) =>
        format == LogFormat.Json
            ? JsonSerializer.Serialize(new Dictionary<string, object> { ["time"] = JsonStamp(now), ["message"] = text })
            : $"{Stamp(now)} {text}";

    private void WriteProgress(DateTimeOffset now)
    {
        var report = latest!;
        double? rate = null;
        var since = printed is { } p && p.Total == report.Total ? (p.Done, p.At) : first!.Value;
        if (now > since.At && report.Done > since.Done) rate = (report.Done - since.Done) / (now - since.At).TotalSeconds;
        double? eta = null;
        if (report.Total > 0 && first is { } f && now > f.At && report.Done > f.Done)
            eta = (report.Total - report.Done) / ((report.Done - f.Done) / (now - f.At).TotalSeconds);
        printed = (report.Done, report.Total, now);
        if (format == LogFormat.Json)
        {
            WriteJson(now, "progress", report.Done, report.Total, rate, eta, now - started, null, report.Figures);
            return;
        }
        var line = new StringBuilder();
        line.Append(Stamp(now)).Append(' ').Append(task).Append(' ');
        AppendCount(line, report.Done, report.Total);
        if (report.Total > 0) line.Append(" (").Append((100 * report.Done / report.Total).ToString("0.0", CultureInfo.InvariantCulture)).Append("%)");
        if (rate is double r) line.Append(", ").Append(Rate(r));
        if (eta is double e) line.Append(", ETA ").Append(Duration(TimeSpan.FromSeconds(Math.Min(e, TimeSpan.MaxValue.TotalSeconds / 2))));
        AppendFigures(line, report.Figures);
        Write(line.ToString(), now);
    }

    private void WriteStalled(DateTimeOffset now)
    {
        var report = latest ?? new ProgressReport(0, 0);
        var still = now - movedAt;
        if (format == LogFormat.Json)
        {
            WriteJson(now, "waiting", report.Done, report.Total, null, null, now - started, still, []);
            return;
        }
        var line = new StringBuilder();
        line.Append(Stamp(now)).Append(' ').Append(task).Append(' ');
        if (latest is null) line.Append("starting, nothing done yet after ").Append(Duration(still));
        else
        {
            AppendCount(line, report.Done, report.Total);
            line.Append(", no progress for ").Append(Duration(still));
        }
        Write(line.ToString(), now);
    }

    private void WriteJson(DateTimeOffset now, string progressEvent, double done, double total, double? rate, double? eta, TimeSpan elapsed, TimeSpan? still,
        IReadOnlyList<ProgressFigure> figures)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("time", JsonStamp(now));
            json.WriteString("task", task);
            json.WriteString("event", progressEvent);
            json.WriteNumber("done", done);
            if (total > 0)
            {
                json.WriteNumber("total", total);
                json.WriteNumber("percent", Math.Round(100 * done / total, 2));
            }
            json.WriteString("unit", unit);
            if (rate is double r) json.WriteNumber("rate", Math.Round(r, 6));
            if (eta is double e) json.WriteNumber("eta_seconds", Math.Round(e, 1));
            json.WriteNumber("elapsed_seconds", Math.Round(elapsed.TotalSeconds, 3));
            if (still is TimeSpan s) json.WriteNumber("no_progress_seconds", Math.Round(s.TotalSeconds, 1));
            if (figures.Count > 0)
            {
                json.WriteStartObject("figures");
                foreach (var figure in figures)
                {
                    if (double.IsFinite(figure.Value)) json.WriteNumber(figure.Name, double.Parse(figure.Value.ToString("G6", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture));
                    else json.WriteString(figure.Name, figure.Value.ToString(CultureInfo.InvariantCulture));
                }
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        Write(Encoding.UTF8.GetString(buffer.ToArray()), now);
    }

    private void Write(string line, DateTimeOffset now)
    {
        output.WriteLine(line);
        output.Flush();
        lastLine = now;
    }

    private void AppendCount(StringBuilder line, double done, double total)
    {
        line.Append(Count(done));
        if (total > 0) line.Append('/').Append(Count(total));
        line.Append(' ').Append(unit);
    }

    private static void AppendFigures(StringBuilder line, IReadOnlyList<ProgressFigure> figures)
    {
        foreach (var figure in figures.Where(f => f.Shown))
            line.Append(' ').Append(figure.Name).Append('=').Append(figure.Value.ToString(figure.Format, CultureInfo.InvariantCulture));
    }

    /// <summary>Three significant digits: 1234 images/s, 12.3 images/s, 0.0512 steps/s.</summary>
    private string Rate(double perSecond) =>
        $"{perSecond.ToString(perSecond >= 100 ? "0" : perSecond >= 10 ? "0.0" : perSecond >= 1 ? "0.00" : "0.###", CultureInfo.InvariantCulture)} {unit}/s";

    private static string Count(double value) => value.ToString(value == Math.Floor(value) ? "0" : "0.##", CultureInfo.InvariantCulture);

    /// <summary>Seconds precision in text lines (what a reader compares); milliseconds in JSON.</summary>
    public static string Stamp(DateTimeOffset now) => now.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private static string JsonStamp(DateTimeOffset now) => now.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>42s, 4m18s, 3h04m, 2d03h: two units, enough to plan by.</summary>
    public static string Duration(TimeSpan span)
    {
        if (span < TimeSpan.Zero) span = TimeSpan.Zero;
        if (span.TotalMinutes < 1) return $"{(int)span.TotalSeconds}s";
        if (span.TotalHours < 1) return $"{(int)span.TotalMinutes}m{span.Seconds:00}s";
        if (span.TotalDays < 1) return $"{(int)span.TotalHours}h{span.Minutes:00}m";
        return $"{(int)span.TotalDays}d{span.Hours:00}h";
    }
}
