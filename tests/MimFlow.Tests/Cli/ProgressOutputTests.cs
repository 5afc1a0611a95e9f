using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using MimFlow.Cli.Reporting;
using MimFlow.Precompute;
using MimFlow.Tests.Precompute;

namespace MimFlow.Tests.Cli;

/// <summary>Progress for logs nobody watches live: time-stamped plain lines or JSON objects, throttled, never repeated.</summary>
public sealed partial class ProgressOutputTests
{
    /// <summary>A clock the test moves by hand.</summary>
    private sealed class ManualClock(DateTimeOffset start) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = start;

        public override DateTimeOffset GetUtcNow() => Now;

        public void Advance(double seconds) => Now += TimeSpan.FromSeconds(seconds);
    }

    private static readonly DateTimeOffset Start = new(2026, 12, 1, 8, 0, 0, TimeSpan.Zero);

    [GeneratedRegex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")]
    private static partial Regex Stamp();

    private static string[] Lines(StringWriter output) => output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();

    [Fact]
    public void Text_lines_come_at_most_once_per_interval_with_time_rate_eta_and_figures_and_never_repeat()
    {
        var clock = new ManualClock(Start);
        var output = new StringWriter();
        var log = new ProgressLog(output, "tokenize", "images", TimeSpan.FromSeconds(30), LogFormat.Text, clock);
        ProgressReport At(int done) => new(done, 1000, new ProgressFigure("rows", 2 * done, "0"), new ProgressFigure("quarantined", 1, "0"),
            new ProgressFigure("hidden", 5, Shown: false));

        clock.Advance(10);
        log.Report(At(100));       // the first report: at once
        clock.Advance(10);
        log.Report(At(200));       // within the interval: held back
        clock.Advance(25);
        log.Tick();                // 35 s after the last line: the held-back report
        clock.Advance(35);
        log.Tick();                // nothing moved for 60 s, twice the interval: said
        clock.Advance(5);
        log.Tick();                // and not again within the interval
        clock.Advance(25);
        log.Tick();                // but once per interval while it lasts
        clock.Advance(35);
        log.Report(At(150));       // stale (out of order): ignored
        log.Report(At(400));
        clock.Advance(40);
        log.Report(At(1000));
        clock.Advance(1);
        log.Finish(succeeded: true);

        var lines = Lines(output);
        Assert.Equal(
        [
            "2026-12-01T08:00:00Z tokenize started",
            "2026-12-01T08:00:10Z tokenize 100/1000 images (10.0%) rows=200 quarantined=1",
            "2026-12-01T08:00:45Z tokenize 200/1000 images (20.0%), 2.86 images/s, ETA 4m40s rows=400 quarantined=1",
            "2026-12-01T08:01:20Z tokenize 200/1000 images, no progress for 1m00s",
            "2026-12-01T08:01:50Z tokenize 200/1000 images, no progress for 1m30s",
            "2026-12-01T08:02:25Z tokenize 400/1000 images (40.0%), 2.00 images/s, ETA 4m30s rows=800 quarantined=1",
            "2026-12-01T08:03:05Z tokenize 1000/1000 images (100.0%), 15.0 images/s, ETA 0s rows=2000 quarantined=1",
            "2026-12-01T08:03:06Z tokenize done 1000/1000 images in 3m06s, 5.11 images/s rows=2000 quarantined=1",
        ], lines);
        Assert.All(lines, l => Assert.DoesNotContain('\u001b', l));
        Assert.All(lines, l => Assert.Matches(Stamp(), l));
    }

    [Fact]
    public void A_stopped_task_says_where_it_stopped_and_nothing_after()
    {
        var clock = new ManualClock(Start);
        var output = new StringWriter();
        var log = new ProgressLog(output, "pretrain", "steps", TimeSpan.Zero, LogFormat.Text, clock);
        clock.Advance(2);
        log.Report(ProgressReport.FromStep(0, 10, new Dictionary<string, double> { ["loss"] = 9.1234567, ["lr"] = 1e-4, ["images_per_second"] = 12.34 }));
        clock.Advance(2);
        log.Report(ProgressReport.FromStep(1, 10, new Dictionary<string, double> { ["loss"] = 8.5, ["lr"] = 2e-4, ["images_per_second"] = 13.0 }));
        log.Report(ProgressReport.FromStep(1, 10, new Dictionary<string, double> { ["loss"] = 8.5, ["lr"] = 2e-4, ["images_per_second"] = 13.0 }));
        clock.Advance(1);
        log.Finish(succeeded: false);
        log.Report(ProgressReport.FromStep(2, 10, new Dictionary<string, double> { ["loss"] = 8.0 }));
        Assert.Equal(
        [
            "2026-12-01T08:00:00Z pretrain started",
            "2026-12-01T08:00:02Z pretrain 1/10 steps (10.0%) loss=9.1235 images_per_second=12.3",
            "2026-12-01T08:00:04Z pretrain 2/10 steps (20.0%), 0.5 steps/s, ETA 16s loss=8.5000 images_per_second=13.0",
            "2026-12-01T08:00:05Z pretrain stopped at 2/10 steps after 5s, 0.333 steps/s loss=8.5000 images_per_second=13.0",
        ], Lines(output));
    }

    [Fact]
    public void Json_lines_are_one_object_each_with_every_figure()
    {
        var clock = new ManualClock(Start);
        var output = new StringWriter();
        var log = new ProgressLog(output, "pretrain", "steps", TimeSpan.FromSeconds(1), LogFormat.Json, clock);
        clock.Advance(1);
        log.Report(ProgressReport.FromStep(0, 4, new Dictionary<string, double> { ["loss"] = 7.5, ["lr"] = 3e-4, ["grad_norm"] = double.NaN }));
        clock.Advance(2);
        log.Report(ProgressReport.FromStep(1, 4, new Dictionary<string, double> { ["loss"] = 7.25, ["lr"] = 3e-4, ["grad_norm"] = 1.5 }));
        clock.Advance(2);
        log.Finish(succeeded: true);
        var objects = Lines(output).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(["start", "progress", "progress", "done"], objects.Select(o => o.GetProperty("event").GetString()));
        Assert.All(objects, o => Assert.Equal("pretrain", o.GetProperty("task").GetString()));
        Assert.Equal("2026-12-01T08:00:03.000Z", objects[2].GetProperty("time").GetString());
        Assert.Equal(2, objects[2].GetProperty("done").GetDouble());
        Assert.Equal(4, objects[2].GetProperty("total").GetDouble());
        Assert.Equal(50, objects[2].GetProperty("percent").GetDouble());
        Assert.Equal(0.5, objects[2].GetProperty("rate").GetDouble());
        Assert.Equal(4, objects[2].GetProperty("eta_seconds").GetDouble());
        var figures = objects[2].GetProperty("figures");
        Assert.Equal(7.25, figures.GetProperty("loss").GetDouble());
        Assert.Equal(3e-4, figures.GetProperty("lr").GetDouble());
        Assert.Equal(2, figures.GetProperty("step").GetDouble());
        Assert.Equal("NaN", objects[1].GetProperty("figures").GetProperty("grad_norm").GetString());
        Assert.Equal(4, objects[3].GetProperty("done").GetDouble());
    }

    [Fact]
    public async Task A_redirected_tokenize_and_pretrain_print_time_stamped_progress_lines()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 10);
        string shards = fixture.Combine("shards");
        var tokenize = await CliHarness.RunAsync("tokenize", "--data", fixture.Data, "--layout", "imagenet", "--tokenizer", fixture.Tokenizer,
            "--teacher", fixture.Teacher, "--views", "2", "--store-image", "max-side=48", "--out", shards, "--batch", "4", "--workers", "2", "--progress-interval", "0");
        Assert.True(tokenize.ExitCode == 0, tokenize.Error);
        var lines = tokenize.Output.Split('\n').Where(l => l.Contains(" tokenize ", StringComparison.Ordinal)).ToList();
        Assert.StartsWith("tokenize started", lines[0][21..]);
        Assert.All(lines, l => Assert.Matches(Stamp(), l));
        var progress = lines.Where(l => Regex.IsMatch(l, @" tokenize \d+/11 images \(")).ToList();
        Assert.NotEmpty(progress);
        Assert.All(progress, l => Assert.Matches(@"rows=\d+ shards=\d+ quarantined=[01]$", l));
        var done = progress.Select(l => int.Parse(Regex.Match(l, @" (\d+)/11 ").Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(done.Distinct().Order(), done);  // increasing, no line repeated
        Assert.Matches(@" tokenize done 11/11 images in \d+s, [\d.]+ images/s rows=20 shards=\d+ quarantined=1", lines[^1]);
        Assert.DoesNotContain('\u001b', tokenize.Output);

        string student = fixture.Combine("student");
        var config = MimFlow.Models.Backbones.Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 };
        using (var model = MimFlow.Models.Interop.ModelCatalog.Create(new MimFlow.Models.Interop.ModelSpec("beit-test", Config: config), seed: 3))
            MimFlow.Models.Interop.ModelDirectory.Save(student, new MimFlow.Models.Interop.ModelSpec("beit-test", Config: config), model);
        var pretrain = await CliHarness.RunAsync("pretrain", "--shards", shards, "--objective", "beit", "--model", student, "--steps", "3", "--batch", "4",
            "--workers", "2", "--out", fixture.Combine("run"), "--log-format", "json", "--progress-interval", "0");
        Assert.True(pretrain.ExitCode == 0, pretrain.Error);
        var objects = pretrain.Output.Split('\n').Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["start", "progress", "progress", "progress", "done"], objects.Select(o => o.GetProperty("event").GetString()));
        Assert.Equal([1.0, 2, 3], objects.Skip(1).Take(3).Select(o => o.GetProperty("done").GetDouble()));
        var metrics = MimFlow.Training.Runs.MetricsLog.Read(fixture.Combine("run")).ToList();
        for (int i = 0; i < 3; i++)
        {
            var figures = objects[i + 1].GetProperty("figures");
            Assert.Equal(metrics[i]["loss"]!.GetValue<double>(), figures.GetProperty("loss").GetDouble(), 5);
            Assert.Equal(metrics[i]["lr"]!.GetValue<double>(), figures.GetProperty("lr").GetDouble(), 9);
            Assert.True(figures.TryGetProperty("input_wait", out _) && figures.TryGetProperty("grad_norm", out _));
        }
    }

    [Fact]
    public async Task A_child_process_with_redirected_output_prints_plain_lines()
    {
        using var directory = new TemporaryDirectory();
        var run = await CliHarness.RunProcessAsync(new Dictionary<string, string>(), "datasets", "synth", "--kind", "imagenet", "--images", "12",
            "--out", directory.Combine("data"), "--progress-interval", "0");
        Assert.True(run.ExitCode == 0, run.Error);
        var lines = run.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains(" synth ", StringComparison.Ordinal)).ToList();
        Assert.All(lines, l => Assert.Matches(Stamp(), l));
        Assert.Matches(@" synth done 12/12 images in \d+s", lines[^1]);
        Assert.DoesNotContain('\u001b', run.Output);
    }

    [Fact]
    public async Task Bad_output_options_are_usage_errors()
    {
        Assert.Equal(2, (await CliHarness.RunAsync("doctor", "--progress-interval", "-1")).ExitCode);
        Assert.Equal(2, (await CliHarness.RunAsync("doctor", "--log-format", "xml")).ExitCode);
        var port = await CliHarness.RunAsync("doctor", "--metrics-port", "70000");
        Assert.Equal(2, port.ExitCode);
        Assert.Contains("--metrics-port", port.Error);
    }
}
