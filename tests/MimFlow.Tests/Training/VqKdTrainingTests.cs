using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Tests.Cli;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Runs;
using MimFlow.Training.Tokenizer;

namespace MimFlow.Tests.Training;

public sealed class VqKdTrainingTests
{
    [Fact]
    public async Task Vqkd_learns_to_reconstruct_the_teacher_and_the_result_tokenizes()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        // The fixture's tokenizer reconstructs 16-d targets; a 16-wide teacher without a head gives them.
        string teacher = fixture.Combine("teacher16");
        var config = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("vit-test", Config: config), seed: 9))
            ModelDirectory.Save(teacher, new ModelSpec("vit-test", Config: config), model);
        string run = fixture.Combine("run");
        var result = await VqKdTrainer.RunAsync(new VqKdTrainRequest
        {
            Data = fixture.Data, Teacher = teacher, Model = fixture.Tokenizer, OutputDirectory = run, Steps = 24, BatchSize = 4, Seed = 3,
            LearningRate = 2e-3, WarmupSteps = 2, RestartEvery = 6, DeadCodeThreshold = 0.5, DecodeWorkers = 2,
        });
        var losses = MetricsLog.Read(run).Select(e => e["loss_rec"]!.GetValue<double>()).ToList();
        Assert.Equal(24, losses.Count);
        Assert.True(losses.TakeLast(6).Average() < losses.Take(6).Average(), $"reconstruction must improve: {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
        Assert.True(result.CodesRestarted > 0, "a high threshold must restart dead codes");
        var (spec, tokenizer) = ModelDirectory.Load(result.Tokenizer);
        using (tokenizer) Assert.IsType<VqKd>(tokenizer);
        Assert.Equal(ModelKind.Vqkd, spec.Kind);

        var shards = await CliHarness.RunAsync("tokenize", "--data", fixture.Data, "--layout", "imagenet", "--tokenizer", result.Tokenizer, "--out", fixture.Combine("shards"));
        Assert.True(shards.ExitCode == 0, shards.Error);
    }

    [Fact]
    public async Task Non_finite_tokenizer_losses_are_skipped_then_stop_the_run()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string teacher = fixture.Combine("teacher16");
        var config = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("vit-test", Config: config), seed: 9))
            ModelDirectory.Save(teacher, new ModelSpec("vit-test", Config: config), model);
        string run = fixture.Combine("run");
        // An infinite learning rate makes every loss after the first step non-finite.
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => VqKdTrainer.RunAsync(new VqKdTrainRequest
        {
            Data = fixture.Data, Teacher = teacher, Model = fixture.Tokenizer, OutputDirectory = run, Steps = 24, BatchSize = 4, Seed = 3,
            LearningRate = double.PositiveInfinity, WarmupSteps = 0, ClipGradient = null, MaxConsecutiveNonFinite = 2, DecodeWorkers = 2,
        }));
        Assert.Contains("non-finite", error.Message);
        var lines = MetricsLog.Read(run).ToList();
        Assert.InRange(lines.Count, 3, 23);
        Assert.All(lines.TakeLast(3), line => Assert.True(line["skipped"]!.GetValue<bool>()));
    }
}
