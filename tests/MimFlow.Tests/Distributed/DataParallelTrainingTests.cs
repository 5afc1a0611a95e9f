using MimFlow.Datasets.Synthetic;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Tests.Cli;
using MimFlow.Torch.Backend;
using MimFlow.Training.Runs;
using Xunit.Abstractions;

namespace MimFlow.Tests.Distributed;

/// <summary>A clean generated ImageNet-layout set (with a val split) and two tiny backbones: a ViT with absolute
/// positions (iBOT's local crops) and a BEiT, both with drop path 0.1.</summary>
public sealed class SupervisedDataFixture : IAsyncLifetime
{
    private readonly TemporaryDirectory directory = new();

    public string Data => directory.Combine("data");
    public string Vit => directory.Combine("vit");
    public string Beit => directory.Combine("beit");
    public string Vqkd => directory.Combine("vqkd");
    public string Ade => directory.Combine("ade");

    public string Combine(string name) => directory.Combine(name);

    public async Task InitializeAsync()
    {
        TorchBackend.EnsureLoaded();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = Data, Images = 20, Classes = 2, MinSide = 40, MaxSide = 80, ValidationFraction = 0.2,
        });
        var vit = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, UseMaskToken = true, DropPathRate = 0.1 };
        using (var model = ModelCatalog.Create(new ModelSpec("vit-test", Config: vit), seed: 4))
            ModelDirectory.Save(Vit, new ModelSpec("vit-test", Config: vit), model);
        var beit = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, DropPathRate = 0.1 };
        using (var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: beit), seed: 3))
            ModelDirectory.Save(Beit, new ModelSpec("beit-test", Config: beit), model);
        // A VQ-KD that reconstructs the 32-wide ViT's features, and a small ADE20K set for segmentation.
        var vqkd = MimFlow.Models.Tokenizers.VqKdConfig.ForEncoder(new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 })
            with { Codes = 64, CodeDim = 8, DecoderDepth = 1, TeacherDim = 32 };
        using (var model = ModelCatalog.Create(new ModelSpec("vqkd-test", Vqkd: vqkd), seed: 6))
            ModelDirectory.Save(Vqkd, new ModelSpec("vqkd-test", Vqkd: vqkd), model);
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.Ade20k, OutputDirectory = Ade, Images = 10, Classes = 4, MinSide = 48, MaxSide = 80, ValidationFraction = 0.2, Seed = 7,
        });
    }

    public Task DisposeAsync()
    {
        directory.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>iBOT pretraining (centres all-reduced, multi-view drop path) and fine-tuning on 2 ranks against one process.</summary>
public sealed class DataParallelTrainingTests(SupervisedDataFixture data, ITestOutputHelper output) : IClassFixture<SupervisedDataFixture>
{
    [SkippableFact]
    public async Task Ibot_on_two_ranks_repeats_the_single_process_losses()
    {
        MpiRun.SkipUnlessAvailable();
        string[] Args(string run) =>
        [
            "pretrain", "--objective", "ibot", "--model", data.Vit, "--data", data.Data, "--layout", "imagenet", "--local-crops", "2",
            "--steps", "6", "--batch", "4", "--seed", "2", "--lr", "5e-4", "--warmup-steps", "1", "--workers", "1", "--out", run,
        ];
        await SameRun("ibot", Args(data.Combine("ibot-1")), Args(data.Combine("ibot-2")), data.Combine("ibot-1"), data.Combine("ibot-2"));
    }

    [SkippableFact]
    public async Task Fine_tuning_on_two_ranks_repeats_the_single_process_losses()
    {
        MpiRun.SkipUnlessAvailable();
        string[] Args(string run) =>
        [
            "finetune", "--task", "classify", "--model", data.Beit, "--data", data.Data, "--epochs", "2", "--batch", "4", "--seed", "5",
            "--no-mixup", "--workers", "1", "--out", run,
        ];
        await SameRun("classify", Args(data.Combine("ft-1")), Args(data.Combine("ft-2")), data.Combine("ft-1"), data.Combine("ft-2"));
        Assert.True(File.Exists(Path.Combine(data.Combine("ft-2"), "eval.json")), "rank 0 evaluates");
    }

    [SkippableFact]
    public async Task Linear_probing_on_two_ranks_repeats_the_single_process_losses()
    {
        MpiRun.SkipUnlessAvailable();
        string[] Args(string run) =>
        [
            "finetune", "--task", "linear-probe", "--model", data.Beit, "--data", data.Data, "--epochs", "2", "--batch", "4", "--seed", "5",
            "--workers", "1", "--out", run,
        ];
        await SameRun("linear-probe", Args(data.Combine("lp-1")), Args(data.Combine("lp-2")), data.Combine("lp-1"), data.Combine("lp-2"));
    }

    [SkippableFact]
    public async Task Vqkd_training_on_two_ranks_repeats_the_single_process_losses()
    {
        MpiRun.SkipUnlessAvailable();
        // Codebook statistics are all-reduced and rank 0's dead-code restarts are shared, so the losses are the one process's.
        string[] Args(string run) =>
        [
            "train-tokenizer", "--teacher", data.Vit, "--model", data.Vqkd, "--data", data.Data, "--steps", "6", "--batch", "4", "--seed", "3",
            "--lr", "2e-3", "--workers", "1", "--out", run,
        ];
        await SameRun("train-tokenizer", Args(data.Combine("vq-1")), Args(data.Combine("vq-2")), data.Combine("vq-1"), data.Combine("vq-2"));
        Assert.True(File.Exists(Path.Combine(data.Combine("vq-2"), "tokenizer", "config.json")), "rank 0 writes the tokenizer");
    }

    [SkippableFact]
    public async Task Segmentation_on_two_ranks_trains_keeps_its_replicas_identical_and_evaluates_on_rank_zero()
    {
        MpiRun.SkipUnlessAvailable();
        // Not the one process's losses: the decode heads' BatchNorm normalises each rank's rows by their own statistics
        // (no SyncBatchNorm, docs/distributed.md). What must hold: the same schedule, identical replicas (checked after
        // every epoch; a mismatch ends the run) and rank 0's evaluation.
        string run = data.Combine("seg-2");
        var two = await MpiRun.RunAsync(2, ["finetune", "--task", "segment", "--model", data.Beit, "--data", data.Ade, "--epochs", "2", "--batch", "4",
            "--crop-size", "32", "--decoder", "setr-pup", "--decoder-channels", "32", "--eval-mode", "centre", "--seed", "1", "--workers", "1", "--out", run]);
        Assert.True(two.ExitCode == 0, two.Output + two.Error);
        var lines = MetricsLog.Read(run).ToList();
        Assert.Equal(4, lines.Count);  // 8 training images, a global batch of 4, 2 epochs
        Assert.All(lines, line => Assert.Equal(2, line["world_size"]!.GetValue<int>()));
        Assert.All(lines, line => Assert.True(double.IsFinite(line["loss"]!.GetValue<double>())));
        Assert.True(File.Exists(Path.Combine(run, "eval.json")), "rank 0 evaluates");
    }

    private async Task SameRun(string name, string[] single, string[] parallel, string singleRun, string parallelRun)
    {
        var alone = await CliHarness.RunProcessAsync(new Dictionary<string, string>(), single);
        Assert.True(alone.ExitCode == 0, alone.Error);
        var two = await MpiRun.RunAsync(2, parallel);
        Assert.True(two.ExitCode == 0, two.Output + two.Error);
        var expected = MetricsLog.Read(singleRun).ToList();
        var actual = MetricsLog.Read(parallelRun).ToList();
        Assert.Equal(expected.Count, actual.Count);
        Assert.NotEmpty(expected);
        double worst = 0;
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(2, actual[i]["world_size"]!.GetValue<int>());
            foreach (var (key, value) in expected[i].Where(p => p.Key.StartsWith("loss", StringComparison.Ordinal)))
            {
                double a = value!.GetValue<double>(), b = actual[i][key]!.GetValue<double>();
                double relative = Math.Abs(a - b) / Math.Max(Math.Abs(a), 1e-30);
                worst = Math.Max(worst, relative);
                Assert.True(relative <= 1e-5, $"{name} step {i} {key}: one process {a}, two ranks {b} (relative {relative:E2})");
            }
        }
        output.WriteLine($"{name}: {expected.Count} steps, worst loss difference {worst:E2} relative");
    }

    [RequiresProgramFact("mpirun", "openmpi-bin")]
    public async Task Bench_train_world_2_reports_step_time_scaling_efficiency_and_all_reduce_time()
    {
        using var dir = new TemporaryDirectory();
        string json = dir.Combine("scaling.json");
        var outcome = await MimFlow.Tests.Cli.CliHarness.RunProcessAsync(new Dictionary<string, string>(), "bench", "train", "--world", "2", "--model", "beit-tiny",
            "--batch", "4", "--steps", "1", "--dtype", "fp32", "--json", json);
        Assert.True(outcome.ExitCode == 0, outcome.Error);
        Assert.Contains("scaling efficiency", outcome.Output);
        var document = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        var ranks = document["ranks"]!.AsArray();
        Assert.Equal([1, 2], ranks.Select(r => r!["world_size"]!.GetValue<int>()));
        Assert.Equal(0, ranks[0]!["allreduce_ms"]!.GetValue<double>());
        Assert.True(ranks[1]!["allreduce_ms"]!.GetValue<double>() > 0, "two ranks all-reduce their gradients");
        Assert.InRange(document["scaling_efficiency"]!.GetValue<double>(), 0.01, 2);
    }
}
