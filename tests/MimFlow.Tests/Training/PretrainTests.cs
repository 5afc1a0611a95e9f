using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Cli;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;
using static MimFlow.Tests.Training.RunAssertions;

namespace MimFlow.Tests.Training;

public sealed class PretrainTests
{
    /// <summary>A tiny BEiT on the fixture's 32 px / 4×4 grid, as a model directory.</summary>
    private static string Student(TokenizeFixture fixture)
    {
        string directory = fixture.Combine("student");
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, DropPathRate = 0.1 };
        using var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 3);
        ModelDirectory.Save(directory, new ModelSpec("beit-test", Config: config), model);
        return directory;
    }

    private static PretrainRequest Request(TokenizeFixture fixture, string shards, string student, string run, string objective = "beit") => new()
    {
        Shards = shards, Objective = objective, Model = student, OutputDirectory = run, Steps = 12, BatchSize = 4, Seed = 11,
        CheckpointEvery = 4, LearningRate = 2e-3, MinLearningRate = 1e-4, WarmupSteps = 2, DecodeWorkers = 2,
    };

    [Fact]
    public async Task Pretraining_lowers_the_loss_and_a_resumed_run_repeats_every_loss_exactly()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards));
        string student = Student(fixture);

        string whole = fixture.Combine("whole");
        var result = await Pretrainer.RunAsync(Request(fixture, shards, student, whole));
        var losses = Losses(whole);
        Assert.Equal(12, losses.Count);
        Assert.True(losses.Skip(8).Average() < losses.Take(4).Average(), $"loss must fall: {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
        Assert.Equal(11, result.LastStep);
        Assert.EndsWith("step-00000012", result.Checkpoint);
        var metric = MetricsLog.Read(whole).First();
        foreach (string key in new[] { "step", "loss", "loss_mim", "mim_acc", "lr", "images_per_second", "input_wait", "grad_norm", "time", "world_size" }) Assert.True(metric.ContainsKey(key), key);
        Assert.True(DateTimeOffset.TryParse(metric["time"]!.GetValue<string>(), out _));
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(whole, MimFlow.Training.Runs.TensorBoardLog.FolderName), "events.out.tfevents.*"));
        Assert.DoesNotContain(metric, p => p.Key.StartsWith("loss_", StringComparison.Ordinal) && p.Key.EndsWith("acc", StringComparison.Ordinal));

        string resumed = fixture.Combine("resumed");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<PretrainProgress>(p => { if (p.Step == 8) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Pretrainer.RunAsync(Request(fixture, shards, student, resumed), progress, stop.Token));
        }
        Assert.EndsWith("step-00000008", new CheckpointStore(resumed).Latest());
        await Assert.ThrowsAsync<InvalidOperationException>(() => Pretrainer.RunAsync(Request(fixture, shards, student, resumed)));
        var second = await Pretrainer.RunAsync(Request(fixture, shards, student, resumed) with { Resume = true });
        Assert.Equal(8, second.FirstStep);
        Assert.Equal(losses, Losses(resumed));

        // run.json: one entry per start, each with the resolved options, versions and the inputs' identity.
        var starts = RunRecord.Read(resumed);
        Assert.Equal(2, starts.Count);
        Assert.Equal([false, true], starts.Select(s => s["options"]!["resume"]!.GetValue<bool>()));
        Assert.Equal("beit", starts[0]["options"]!["objective"]!.GetValue<string>());
        Assert.Equal(12, starts[1]["total_steps"]!.GetValue<long>());
        Assert.NotEqual("unknown", starts[0]["versions"]!["mimflow"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(starts[0]["versions"]!["libtorch"]!.GetValue<string>()));
        var shardInput = starts[0]["inputs"]!.AsArray().Single(i => i!["role"]!.GetValue<string>() == "shards")!;
        Assert.Equal(MimFlow.Core.IO.FolderChecksums.Sha256Of(Path.Combine(shards, "manifest.json")), shardInput["sha256"]!["manifest.json"]!.GetValue<string>());

        // The backbone of a checkpoint is a model directory that exports to timm.
        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", Path.Combine(result.Checkpoint, "backbone"), "--out", fixture.Combine("timm"));
        Assert.True(export.ExitCode == 0, export.Error);
        var plot = await CliHarness.RunAsync("plot", whole);
        Assert.True(plot.ExitCode == 0, plot.Error);
        Assert.True(File.Exists(Path.Combine(whole, "loss.png")));
        // The masked-token accuracy has its own 0–1 chart, not the loss axis.
        Assert.True(File.Exists(Path.Combine(whole, "accuracy.png")));
    }

    [Fact]
    public async Task Codes_only_shards_pretrain_on_the_originals_given_with_data_and_resume_exactly()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { StoreImageMaxSide = null, TeacherDirectory = null });
        string student = Student(fixture);
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => Pretrainer.RunAsync(Request(fixture, shards, student, fixture.Combine("refused"))));
        Assert.Contains("--data", refused.Message);

        PretrainRequest FromOriginals(string run, string? data = null) => Request(fixture, shards, student, run) with { Data = data ?? fixture.Data };
        string whole = fixture.Combine("whole");
        await Pretrainer.RunAsync(FromOriginals(whole));
        var losses = Losses(whole);
        Assert.Equal(12, losses.Count);
        Assert.True(losses.Skip(8).Average() < losses.Take(4).Average(), $"loss must fall: {string.Join(", ", losses.Select(l => l.ToString("F3")))}");

        string resumed = fixture.Combine("resumed");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<PretrainProgress>(p => { if (p.Step == 6) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Pretrainer.RunAsync(FromOriginals(resumed), progress, stop.Token));
        }
        await Pretrainer.RunAsync(FromOriginals(resumed) with { Resume = true });
        Assert.Equal(losses, Losses(resumed));

        // Another dataset (one image gone) ends the run before its first step, naming the first missing image.
        string moved = fixture.Combine("moved");
        CopyFolder(fixture.Data, moved);
        string gone = Directory.EnumerateFiles(Path.Combine(moved, "train"), "*.JPEG", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Skip(3).First();
        File.Delete(gone);
        string lost = fixture.Combine("lost");
        var missing = await Assert.ThrowsAsync<FileNotFoundException>(() => Pretrainer.RunAsync(FromOriginals(lost, moved)));
        Assert.Contains(Path.GetRelativePath(moved, gone).Replace('\\', '/'), missing.Message);
        Assert.False(File.Exists(Path.Combine(lost, "metrics.jsonl")) && File.ReadAllText(Path.Combine(lost, "metrics.jsonl")).Length > 0);

        // From the command line: the refusal names the option that exists, and --data makes the same shards train.
        string[] common = ["pretrain", "--shards", shards, "--objective", "beit", "--model", student, "--steps", "2", "--batch", "4", "--workers", "2"];
        var without = await CliHarness.RunAsync([.. common, "--out", fixture.Combine("cli-without")]);
        Assert.Equal(MimFlow.Cli.MimFlowCli.Failure, without.ExitCode);
        Assert.Contains("give --data", without.Error);
        var with = await CliHarness.RunAsync([.. common, "--out", fixture.Combine("cli-with"), "--data", fixture.Data]);
        Assert.True(with.ExitCode == 0, with.Error);
    }

    private static void CopyFolder(string from, string to)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    [Fact]
    public async Task Beit_v2_and_maskdistill_train_from_the_same_shards()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards));
        string student = Student(fixture);
        foreach (string objective in new[] { "beitv2", "maskdistill" })
        {
            string run = fixture.Combine(objective);
            var result = await Pretrainer.RunAsync(Request(fixture, shards, student, run, objective) with { Steps = 4, CheckpointEvery = 100 });
            Assert.True(double.IsFinite(result.LastLoss), objective);
            var first = MetricsLog.Read(run).First();
            Assert.True(first.ContainsKey(objective == "beitv2" ? "loss_aggregation" : "loss_distill"), objective);
        }

        // bf16 compute over fp32 masters starts from the same loss up to bf16 rounding and keeps training.
        string fp32 = fixture.Combine("fp32"), bf16 = fixture.Combine("bf16");
        await Pretrainer.RunAsync(Request(fixture, shards, student, fp32) with { Steps = 4, CheckpointEvery = 100 });
        await Pretrainer.RunAsync(Request(fixture, shards, student, bf16) with { Steps = 4, CheckpointEvery = 100, ComputeType = TorchSharp.torch.ScalarType.BFloat16 });
        var (full, low) = (Losses(fp32), Losses(bf16));
        Assert.InRange(Math.Abs(full[0] - low[0]), 0, 0.02 * full[0]);
        Assert.All(low, l => Assert.True(double.IsFinite(l)));
    }

    [Fact]
    public async Task Ibot_pretrains_from_multi_crop_views_and_resumes_exactly()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string student = fixture.Combine("vit");
        var config = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, UseMaskToken = true, DropPathRate = 0.1 };
        using (var model = ModelCatalog.Create(new ModelSpec("vit-test", Config: config), seed: 4))
            ModelDirectory.Save(student, new ModelSpec("vit-test", Config: config), model);
        PretrainRequest Ibot(string run) => new()
        {
            Data = fixture.Data, Objective = "ibot", Model = student, OutputDirectory = run, Steps = 6, BatchSize = 4, Seed = 2, LocalCrops = 2,
            CheckpointEvery = 3, LearningRate = 5e-4, WarmupSteps = 1, DecodeWorkers = 2,
        };
        var whole = await Pretrainer.RunAsync(Ibot(fixture.Combine("whole")));
        var losses = Losses(fixture.Combine("whole"));
        Assert.Equal(6, losses.Count);
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        var first = MetricsLog.Read(fixture.Combine("whole")).First();
        Assert.True(first.ContainsKey("loss_cls") && first.ContainsKey("loss_patch"));

        string resumed = fixture.Combine("resumed");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<PretrainProgress>(p => { if (p.Step == 3) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Pretrainer.RunAsync(Ibot(resumed), progress, stop.Token));
        }
        await Pretrainer.RunAsync(Ibot(resumed) with { Resume = true });
        Assert.Equal(losses, Losses(resumed));
    }

    [Fact]
    public async Task Non_finite_losses_are_skipped_then_stop_the_run_with_a_checkpoint()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards));
        string run = fixture.Combine("run");
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => Pretrainer.RunAsync(
            Request(fixture, shards, Student(fixture), run) with { Steps = 40, LearningRate = 1e30, WarmupSteps = 0, MaxConsecutiveNonFinite = 2 }));
        Assert.Contains("non-finite", error.Message);
        Assert.NotNull(new CheckpointStore(run).Latest());
        Assert.Contains(MetricsLog.Read(run), e => e.ContainsKey("skipped"));
    }
}
