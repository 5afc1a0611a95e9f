using System.Diagnostics;
using System.Text.Json.Nodes;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Cli;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Distributed;
using MimFlow.Training.Runs;
using Xunit.Abstractions;

namespace MimFlow.Tests.Distributed;

/// <summary>Shards with codes and teacher features and a tiny BEiT (drop path 0.1), made once for the distributed tests.</summary>
public sealed class DataParallelFixture : IAsyncLifetime
{
    private TokenizeFixture? fixture;

    public string Shards => Combine("shards");
    public string Student => Combine("student");

    public string Combine(string name) => fixture!.Combine(name);

    public string Data => fixture!.Data;
    public string Tokenizer => fixture!.Tokenizer;

    public async Task InitializeAsync()
    {
        fixture = await TokenizeFixture.CreateAsync(images: 12);
        await TokenizeJob.RunAsync(fixture.Request(Shards));
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, DropPathRate = 0.1 };
        using var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 3);
        ModelDirectory.Save(Student, new ModelSpec("beit-test", Config: config), model);
    }

    public Task DisposeAsync()
    {
        fixture?.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>
/// mpirun -np 2 against the single-process run with the same global batch: the proof that data parallelism changes
/// where the work runs and nothing else.
/// </summary>
public sealed class DataParallelPretrainTests(DataParallelFixture data, ITestOutputHelper output) : IClassFixture<DataParallelFixture>
{
    private string[] Args(string objective, string run, int steps = 10, int checkpointEvery = 5) =>
    [
        "pretrain", "--shards", data.Shards, "--objective", objective, "--model", data.Student, "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "--batch", "8", "--seed", "11", "--checkpoint-every", checkpointEvery.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "--lr", "2e-3", "--min-lr", "1e-4", "--warmup-steps", "2", "--workers", "1", "--out", run,
    ];

    [SkippableTheory]
    [InlineData("beit")]
    [InlineData("maskdistill")]
    public async Task Two_ranks_repeat_the_single_process_run_and_their_replicas_stay_identical(string objective)
    {
        MpiRun.SkipUnlessAvailable();
        string single = data.Combine($"{objective}-single"), parallel = data.Combine($"{objective}-2ranks");
        var alone = await CliHarness.RunProcessAsync(new Dictionary<string, string>(), Args(objective, single));
        Assert.True(alone.ExitCode == 0, alone.Error);
        var two = await MpiRun.RunAsync(2, Args(objective, parallel));
        Assert.True(two.ExitCode == 0, two.Output + two.Error);

        var expected = MetricsLog.Read(single).ToList();
        var actual = MetricsLog.Read(parallel).ToList();
        Assert.Equal(10, expected.Count);
        Assert.Equal(expected.Count, actual.Count);
        Assert.All(expected, line => Assert.Equal(1, line["world_size"]!.GetValue<int>()));
        Assert.All(actual, line => Assert.Equal(2, line["world_size"]!.GetValue<int>()));
        double worstLoss = 0;
        for (int i = 0; i < expected.Count; i++)
            foreach (var (key, value) in expected[i].Where(p => p.Key.StartsWith("loss", StringComparison.Ordinal)))
            {
                double a = value!.GetValue<double>(), b = actual[i][key]!.GetValue<double>();
                double relative = Math.Abs(a - b) / Math.Max(Math.Abs(a), 1e-30);
                worstLoss = Math.Max(worstLoss, relative);
                Assert.True(relative <= 1e-5, $"step {i} {key}: one process {a}, two ranks {b} (relative {relative:E2})");
            }

        double worstWeight = MaxDifference(Path.Combine(single, "checkpoints", "step-00000010"), Path.Combine(parallel, "checkpoints", "step-00000010"));
        output.WriteLine($"{objective}: 10 steps, global batch 8: worst loss difference {worstLoss:E2} relative, worst weight difference {worstWeight:E2} absolute");
        Assert.True(worstWeight <= 1e-5, $"final weights differ by {worstWeight:E2}");

        // Every checkpoint's flat parameter buffer was hashed on both ranks and found bit-identical.
        var replicas = File.ReadAllLines(Path.Combine(parallel, DataParallel.ReplicasFileName)).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal([5L, 10L], replicas.Select(r => r["step"]!.GetValue<long>()));
        Assert.All(replicas, r => Assert.Equal(64, r["params_sha256"]!.GetValue<string>().Length));
        Assert.False(File.Exists(Path.Combine(single, DataParallel.ReplicasFileName)));
    }

    [SkippableFact]
    public async Task Killing_one_rank_ends_the_job_naming_it_and_a_resumed_run_repeats_the_uninterrupted_one()
    {
        MpiRun.SkipUnlessAvailable();
        string whole = data.Combine("kill-whole"), killed = data.Combine("kill-run");
        var uninterrupted = await MpiRun.RunAsync(2, Args("beit", whole, steps: 24, checkpointEvery: 4));
        Assert.True(uninterrupted.ExitCode == 0, uninterrupted.Output + uninterrupted.Error);

        DateTime killedAt = default;
        Task? killer = null;
        var broken = await MpiRun.RunAsync(2, Args("beit", killed, steps: 24, checkpointEvery: 4), started: mpirun =>
        {
            int pid = mpirun.Id;
            // Its own thread: on a busy pool a queued task could start after the run had already finished.
            killer = Task.Factory.StartNew(() =>
            {
                // After the first checkpoint, rank 1 dies as a node or an OOM kill would end it: SIGKILL, no chance to say goodbye.
                var clock = Stopwatch.StartNew();
                string latest = Path.Combine(killed, MimFlow.Training.Runs.CheckpointStore.LatestFileName);
                while (!File.Exists(latest) && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(10);
                var ranks = MpiRun.RankProcesses(pid);
                Assert.True(ranks.ContainsKey(1), $"rank 1 of mpirun {pid} not found among its children");
                killedAt = DateTime.UtcNow;
                Process.GetProcessById(ranks[1]).Kill();
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        });
        await killer!;
        var ended = DateTime.UtcNow - killedAt;
        output.WriteLine($"rank 1 killed; mpirun ended {ended.TotalSeconds:F1} s later with exit code {broken.ExitCode}");
        Assert.NotEqual(0, broken.ExitCode);
        Assert.True(ended < TimeSpan.FromSeconds(60), $"the job took {ended.TotalSeconds:F0} s to end after rank 1 died");
        Assert.Contains("rank 1", broken.Output + broken.Error);
        var survived = MetricsLog.Read(killed).Count();
        Assert.True(survived < 24, "the run finished before rank 1 was killed");

        var resumed = await MpiRun.RunAsync(2, [.. Args("beit", killed, steps: 24, checkpointEvery: 4), "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.Output + resumed.Error);
        Assert.Equal(Enumerable.Range(0, 24).Select(i => (long)i), RunAssertionsSteps(killed));
        Assert.Equal(Losses(whole), Losses(killed));
        SameWeights(Path.Combine(whole, "checkpoints", "step-00000024"), Path.Combine(killed, "checkpoints", "step-00000024"));
    }

    [SkippableFact]
    public async Task Ranks_started_with_different_options_are_refused_at_start()
    {
        MpiRun.SkipUnlessAvailable();
        string run = data.Combine("mismatch");
        var first = Args("beit", run);
        var second = Args("beit", run).Select(a => a == "11" ? "12" : a).ToArray();
        var outcome = await MpiRun.RunRawAsync([.. MpiRun.Options, "-np", "1", "dotnet", MpiRun.CliDll, .. first, ":", "-np", "1", "dotnet", MpiRun.CliDll, .. second]);
        Assert.NotEqual(0, outcome.ExitCode);
        Assert.Contains("rank 1 resolved other options than rank 0", outcome.Output + outcome.Error);
        Assert.False(File.Exists(Path.Combine(run, MetricsLog.FileName)) && File.ReadAllText(Path.Combine(run, MetricsLog.FileName)).Length > 0);
    }

    [SkippableFact]
    public async Task Tokenize_under_mpirun_takes_its_part_from_the_rank_and_rank_zero_merges_the_same_rows()
    {
        MpiRun.SkipUnlessAvailable();
        string[] Args(string output) =>
            ["tokenize", "--data", data.Data, "--layout", "imagenet", "--tokenizer", data.Tokenizer, "--views", "2", "--seed", "7", "--batch", "4", "--workers", "1", "--out", output];
        string single = data.Combine("tokenize-1"), parallel = data.Combine("tokenize-2");
        var alone = await CliHarness.RunProcessAsync(new Dictionary<string, string>(), Args(single));
        Assert.True(alone.ExitCode == 0, alone.Error);
        var two = await MpiRun.RunAsync(2, Args(parallel));
        Assert.True(two.ExitCode == 0, two.Output + two.Error);
        var expected = MimFlow.Shards.ShardManifest.Read(single);
        var actual = MimFlow.Shards.ShardManifest.Read(parallel);
        Assert.Equal((expected.Rows, expected.SampleCount, expected.Quarantined), (actual.Rows, actual.SampleCount, actual.Quarantined));
        Assert.True(Directory.Exists(parallel + "-parts"), "the parts sit beside the merged set");
        var refused = await MpiRun.RunAsync(2, [.. Args(data.Combine("tokenize-3")), "--shard", "0/2"]);
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("leave --shard out", refused.Output + refused.Error);
    }

    private static List<double> Losses(string run) => MetricsLog.Read(run).Select(e => e["loss"]!.GetValue<double>()).ToList();

    private static List<long> RunAssertionsSteps(string run) => MetricsLog.Read(run).Select(e => e["step"]!.GetValue<long>()).ToList();

    /// <summary>The largest absolute difference between the two checkpoints' model tensors (not the optimiser's moments).</summary>
    private static double MaxDifference(string expectedCheckpoint, string actualCheckpoint)
    {
        using var expected = SafetensorsFile.Open(Path.Combine(expectedCheckpoint, "training.safetensors"));
        using var actual = SafetensorsFile.Open(Path.Combine(actualCheckpoint, "training.safetensors"));
        double worst = 0;
        foreach (var entry in expected.Entries.Where(e => !e.Name.StartsWith("optimizer.", StringComparison.Ordinal)))
        {
            var a = expected.ReadFloat32(entry.Name);
            var b = actual.ReadFloat32(entry.Name);
            Assert.Equal(a.Length, b.Length);
            for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        return worst;
    }

    private static void SameWeights(string expected, string actual) => Assert.Equal(0, MaxDifference(expected, actual));
}
