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
