using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Core.Status;
using MimFlow.Precompute.Tokenize;
using MimFlow.Shards;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Runs;

namespace MimFlow.Tests.Cli;

/// <summary><c>mimflow status</c>: how far a run or a tokenize job is, read from its folder alone.</summary>
public sealed class StatusCommandTests
{
    private static string Line(long step, string time, double loss) =>
        $"{{\"step\":{step},\"epoch\":0,\"loss\":{loss.ToString(System.Globalization.CultureInfo.InvariantCulture)},\"lr\":0.0005,\"images_per_second\":64.5,\"input_wait\":0.25,\"world_size\":1,\"time\":\"{time}\"}}\n";

    /// <summary>A run folder as pretrain writes it: started, interrupted after step 3, resumed an hour later from step 4.</summary>
    private static string ResumedRun(TemporaryDirectory directory)
    {
        string run = directory.Combine("run");
        Directory.CreateDirectory(run);
        string Start(string time) => $"{{\"command\":\"pretrain\",\"time\":\"{time}\",\"device\":\"cuda:0\",\"compute_type\":\"bfloat16\",\"world_size\":8,\"total_steps\":100}}";
        File.WriteAllText(Path.Combine(run, RunRecord.FileName), $"{{\"starts\":[{Start("2026-12-01T08:00:00.000Z")},{Start("2026-12-01T10:00:00.000Z")}]}}");
        var lines = new System.Text.StringBuilder();
        for (int step = 0; step < 4; step++) lines.Append(Line(step, $"2026-12-01T08:0{step}:00.000Z", 9 - step * 0.5));
        // After the resume: one step every 2 s, steps 4..9.
        for (int step = 4; step < 10; step++) lines.Append(Line(step, $"2026-12-01T10:00:{2 * (step - 4):00}.000Z", 7 - step * 0.1));
        lines.Append("{\"step\":10,\"loss\":6.0,\"ti");  // a line being written: left out
        File.WriteAllText(Path.Combine(run, MetricsLog.FileName), lines.ToString());
        return run;
    }

    [Fact]
    public void A_training_run_reports_steps_rate_of_its_current_start_eta_and_whether_it_runs()
    {
        using var directory = new TemporaryDirectory();
        string run = ResumedRun(directory);

        var stopped = RunStatus.Read(run)!;
        Assert.Equal(JobState.Stopped, stopped.State);
        Assert.Equal(("pretrain", 10.0, 100.0, "steps"), (stopped.Kind, stopped.Done, stopped.Total, stopped.Unit));
        Assert.Equal(DateTimeOffset.Parse("2026-12-01T08:00:00Z", System.Globalization.CultureInfo.InvariantCulture), stopped.Started);
        Assert.Equal(DateTimeOffset.Parse("2026-12-01T10:00:00Z", System.Globalization.CultureInfo.InvariantCulture), stopped.Resumed);
        Assert.Equal(DateTimeOffset.Parse("2026-12-01T10:00:10Z", System.Globalization.CultureInfo.InvariantCulture), stopped.LastActivity);
        Assert.Equal(0.5, stopped.Rate!.Value, 9);  // 5 steps in 10 s: the two-hour pause is not counted
        Assert.Null(stopped.Eta);                   // no ETA for a run nobody runs
        Assert.Equal("none yet", stopped.LastDurablePoint);
        Assert.Contains(new KeyValuePair<string, string>("device", "cuda:0 (bfloat16), 8 rank(s)"), stopped.Facts);
        Assert.Contains(new KeyValuePair<string, string>("loss", "6.1"), stopped.Facts);

        using (OutputLock.Acquire(run, "pretrain"))
        {
            var running = RunStatus.Read(run)!;
            Assert.Equal(JobState.Running, running.State);
            Assert.Equal(Environment.ProcessId, running.Holder!.Pid);
            Assert.Equal("pretrain", running.Holder.What);
            Assert.Equal(TimeSpan.FromSeconds(180), running.Eta);  // 90 steps at 0.5 steps/s
        }
        Assert.Null(RunStatus.Read(directory.Path));
    }

    [Fact]
    public async Task The_command_prints_the_status_as_a_table_or_as_json_and_refuses_other_folders()
    {
        using var directory = new TemporaryDirectory();
        string run = ResumedRun(directory);
        var text = await CliHarness.RunAsync("status", run);
        Assert.True(text.ExitCode == 0, text.Error);
        Assert.Contains($"pretrain {run}: stopped, not finished", text.Output);
        Assert.Contains("| progress        | 10/100 steps (10.0%)", text.Output);
        Assert.Contains("| started         | 2026-12-01 08:00:00Z, resumed 2026-12-01 10:00:00Z", text.Output);
        Assert.Contains("| rate            | 0.5 steps/s", text.Output);

        var json = await CliHarness.RunAsync("status", run, "--json");
        var status = JsonDocument.Parse(json.Output).RootElement;
        Assert.Equal("stopped", status.GetProperty("state").GetString());
        Assert.Equal(10, status.GetProperty("done").GetDouble());
        Assert.Equal(100, status.GetProperty("total").GetDouble());
        Assert.Equal(0.5, status.GetProperty("rate").GetDouble());
        Assert.Equal("5e-4", status.GetProperty("facts").GetProperty("lr").GetString());

        var other = await CliHarness.RunAsync("status", directory.Combine("nothing-here"));
        Assert.Equal(1, other.ExitCode);
        Assert.Contains("no such folder", other.Error);
        Directory.CreateDirectory(directory.Combine("empty"));
        var empty = await CliHarness.RunAsync("status", directory.Combine("empty"));
        Assert.Equal(1, empty.ExitCode);
        Assert.Contains("not a run folder", empty.Error);
    }

    [Fact]
    public async Task A_tokenize_job_reports_the_samples_its_journal_covers_then_the_finished_set()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        string output = fixture.Combine("shards");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<TokenizeProgress>(p => { if (p.Shards >= 1) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => TokenizeJob.RunAsync(fixture.Request(output), progress, stop.Token));
        }
        var journal = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, TokenizeJob.ProgressFileName))).RootElement;
        var first = journal.GetProperty("shards")[0];
        int covered = first.GetProperty("first_sample").GetInt32() + first.GetProperty("samples").GetInt32();

        var stopped = TokenizeStatus.Read(output)!;
        Assert.Equal(JobState.Stopped, stopped.State);
        Assert.Equal((double)covered, stopped.Done);
        Assert.Equal(11, stopped.Total);  // 10 images and a broken file
        Assert.Equal("samples", stopped.Unit);
        Assert.StartsWith($"shard {first.GetProperty("name").GetString()} (samples 0..{covered - 1}", stopped.LastDurablePoint);
        Assert.NotNull(stopped.Started);
        Assert.True(stopped.Rate > 0);

        await TokenizeJob.RunAsync(fixture.Request(output));
        var finished = TokenizeStatus.Read(output)!;
        var manifest = ShardManifest.Read(output);
        Assert.Equal(JobState.Finished, finished.State);
        Assert.Equal((11.0, 11.0), (finished.Done, finished.Total));
        Assert.Contains(new KeyValuePair<string, string>("rows", manifest.Rows.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)), finished.Facts);
        Assert.Contains(new KeyValuePair<string, string>("quarantined", "1"), finished.Facts);

        // A folder of job folders (a pipeline's outputs, a data-parallel job's parts) lists each.
        var parts = await CliHarness.RunAsync("status", fixture.Combine(), "--json");
        Assert.True(parts.ExitCode == 0, parts.Error);
        var found = JsonDocument.Parse(parts.Output).RootElement.GetProperty("parts").EnumerateArray().Select(p => p.GetProperty("path").GetString()).ToList();
        Assert.Contains(Path.GetFullPath(output), found);
    }
}
