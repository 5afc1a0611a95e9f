using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using MimFlow.Cli;
using MimFlow.Cli.Reporting;
using MimFlow.Tests.Precompute;

namespace MimFlow.Tests.Cli;

/// <summary><c>--metrics-port</c>: Prometheus gauges served by OpenTelemetry's exporter while a command runs.</summary>
public sealed class MetricsEndpointTests
{
    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static string Scrape(int port)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        return client.GetStringAsync($"http://localhost:{port}/metrics").GetAwaiter().GetResult();
    }

    /// <summary>The value of one series, e.g. <c>mimflow_loss{task="pretrain"}</c>.</summary>
    private static double Value(string exposition, string series)
    {
        var match = Regex.Match(exposition, "^" + Regex.Escape(series) + @" (\S+)", RegexOptions.Multiline);
        Assert.True(match.Success, $"no series {series} in:\n{exposition}");
        return double.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public void Reports_become_gauges_named_after_their_figures()
    {
        int port = FreePort();
        using (var telemetry = CliTelemetry.Start("localhost", port))
        {
            telemetry.Observe("tokenize", "images", new ProgressReport(40, 100, new ProgressFigure("rows", 80), new ProgressFigure("quarantined", 2)));
            telemetry.Observe("pretrain", "steps", ProgressReport.FromStep(6, 50, new Dictionary<string, double>
            {
                ["loss"] = 6.25, ["lr"] = 1.5e-4, ["images_per_second"] = 40.5, ["input_wait"] = 0.125, ["eval/top1"] = 0.5,
            }));
            // A report that overtook an older one: the older, arriving late, does not move the gauges back.
            telemetry.Observe("tokenize", "images", new ProgressReport(38, 100, new ProgressFigure("rows", 76), new ProgressFigure("quarantined", 1)));
            string text = Scrape(port);
            Assert.Equal(40, Value(text, "mimflow_progress_done{task=\"tokenize\",unit=\"images\"}"));
            Assert.Equal(100, Value(text, "mimflow_progress_planned{task=\"tokenize\",unit=\"images\"}"));
            Assert.Equal(80, Value(text, "mimflow_rows{task=\"tokenize\"}"));
            Assert.Equal(2, Value(text, "mimflow_quarantined{task=\"tokenize\"}"));
            Assert.Equal(7, Value(text, "mimflow_step{task=\"pretrain\"}"));
            Assert.Equal(6.25, Value(text, "mimflow_loss{task=\"pretrain\"}"));
            Assert.Equal(1.5e-4, Value(text, "mimflow_lr{task=\"pretrain\"}"));
            Assert.Equal(40.5, Value(text, "mimflow_images_per_second{task=\"pretrain\"}"));
            Assert.Equal(0.125, Value(text, "mimflow_input_wait{task=\"pretrain\"}"));
            Assert.Equal(0.5, Value(text, "mimflow_eval_top1{task=\"pretrain\"}"));
            Assert.InRange(Value(text, "mimflow_memory_used_bytes{device=\"cpu\"}"), 1 << 20, 1L << 40);
            Assert.Contains("# TYPE mimflow_loss gauge", text);

            // The same port cannot serve twice: the second is refused, naming the port.
            var busy = Assert.Throws<IOException>(() => CliTelemetry.Start("localhost", port));
            Assert.Contains($"--metrics-port {port}", busy.Message);
        }
        // Served only while the command runs.
        Assert.ThrowsAny<Exception>(() => Scrape(port));
    }

    [RequiresProgramFact("promtool", "prometheus")]
    public void The_exposition_passes_promtool_check_metrics()
    {
        int port = FreePort();
        using var telemetry = CliTelemetry.Start("localhost", port);
        telemetry.Observe("pretrain", "steps", ProgressReport.FromStep(0, 10, new Dictionary<string, double> { ["loss"] = 9.0, ["lr"] = 1e-3, ["grad_norm"] = 2 }));
        telemetry.Observe("scan", "images", new ProgressReport(5, 10, new ProgressFigure("images_per_second", 50)));
        string text = Scrape(port);
        var check = new ProcessStartInfo("promtool", "check metrics") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(check)!;
        process.StandardInput.Write(text);
        process.StandardInput.Close();
        string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"promtool check metrics: {output}\n{text}");
        Assert.DoesNotContain("mimflow_", output);  // no lint remark on our metrics either
    }

    /// <summary>Scrapes the endpoint from inside the run, while the step that wrote the line waits: progress is reported inline.</summary>
    private sealed class ScrapingWriter(int port, Func<string, bool> when) : StringWriter
    {
        public string? Scraped { get; private set; }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (Scraped is null && value is not null && when(value)) Scraped = Scrape(port);
        }
    }

    [Fact]
    public async Task A_pretraining_run_serves_its_step_loss_and_lr_while_it_runs()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string shards = fixture.Combine("shards");
        await MimFlow.Precompute.Tokenize.TokenizeJob.RunAsync(fixture.Request(shards) with { StoreImageMaxSide = 48 });
        string student = fixture.Combine("student");
        var config = MimFlow.Models.Backbones.Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 };
        var spec = new MimFlow.Models.Interop.ModelSpec("beit-test", Config: config);
        using (var model = MimFlow.Models.Interop.ModelCatalog.Create(spec, seed: 3))
            MimFlow.Models.Interop.ModelDirectory.Save(student, spec, model);

        int port = FreePort();
        var output = new ScrapingWriter(port, line => line.Contains(" pretrain 2/3 steps", StringComparison.Ordinal));
        var error = new StringWriter();
        int exit = await MimFlowCli.RunAsync(["pretrain", "--shards", shards, "--objective", "beit", "--model", student, "--steps", "3", "--batch", "4",
            "--workers", "2", "--out", fixture.Combine("run"), "--progress-interval", "0", "--metrics-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            new CliContext(CliConsole.Plain(output), error));
        Assert.True(exit == 0, error.ToString());
        Assert.NotNull(output.Scraped);
        var second = MimFlow.Training.Runs.MetricsLog.Read(fixture.Combine("run")).ElementAt(1);
        Assert.Equal(2, Value(output.Scraped, "mimflow_step{task=\"pretrain\"}"));
        Assert.Equal(3, Value(output.Scraped, "mimflow_progress_planned{task=\"pretrain\",unit=\"steps\"}"));
        Assert.Equal(second["loss"]!.GetValue<double>(), Value(output.Scraped, "mimflow_loss{task=\"pretrain\"}"), 5);
        Assert.Equal(second["lr"]!.GetValue<double>(), Value(output.Scraped, "mimflow_lr{task=\"pretrain\"}"), 9);
        Assert.ThrowsAny<Exception>(() => Scrape(port));
    }
}
