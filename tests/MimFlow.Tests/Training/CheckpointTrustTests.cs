using MimFlow.Core.IO;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Cli;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;

namespace MimFlow.Tests.Training;

/// <summary>Checkpoints carry the SHA-256 of every file; resuming or fine-tuning from a damaged one is refused, naming the file.</summary>
public sealed class CheckpointTrustTests
{
    private static async Task<(TokenizeFixture Fixture, PretrainRequest Request)> RunAsync()
    {
        var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { TeacherDirectory = null });
        string student = fixture.Combine("student");
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 3))
            ModelDirectory.Save(student, new ModelSpec("beit-test", Config: config), model);
        var request = new PretrainRequest
        {
            Shards = shards, Objective = "beit", Model = student, OutputDirectory = fixture.Combine("run"), Steps = 2, BatchSize = 4, CheckpointEvery = 2, DecodeWorkers = 1,
        };
        await Pretrainer.RunAsync(request);
        return (fixture, request with { Steps = 4, Resume = true });
    }

    private static void Flip(string path)
    {
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length - 5] ^= 0x40;
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public async Task A_flipped_byte_in_a_checkpoint_is_refused_on_resume_and_when_a_run_folder_is_fine_tuned_from()
    {
        var (fixture, resume) = await RunAsync();
        using var _ = fixture;
        string checkpoint = new CheckpointStore(resume.OutputDirectory).Latest()!;
        Assert.True(File.Exists(Path.Combine(checkpoint, FolderChecksums.FileName)));

        string backbone = Path.Combine(checkpoint, "backbone", ModelDirectory.WeightsFileName);
        byte[] intact = File.ReadAllBytes(backbone);
        Flip(backbone);
        // A run folder stands for its latest backbone wherever a model is read (fine-tuning, export, forward).
        var export = await CliHarness.RunAsync("model", "export", "--to", "timm", "--model", resume.OutputDirectory, "--out", fixture.Combine("exported"));
        Assert.Equal(MimFlow.Cli.MimFlowCli.Failure, export.ExitCode);
        Assert.True(export.Error.Contains(backbone, StringComparison.Ordinal), export.Error);
        Assert.Throws<InvalidDataException>(() => MimFlow.Training.Kernel.BackboneSource.Resolve(resume.OutputDirectory, "classifier"));
        File.WriteAllBytes(backbone, intact);

        string training = Path.Combine(checkpoint, "training.safetensors");
        Flip(training);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(resume));
        Assert.Contains(training, error.Message);
        Assert.Contains("SHA-256", error.Message);
    }

    [Theory]
    [InlineData("{\"checkpoint\": \"../../elsewhere\"}", "must name a folder inside checkpoints/")]
    [InlineData("{\"checkpoint\": \"/etc\"}", "must name a folder inside checkpoints/")]
    [InlineData("{not json", "not a run pointer")]
    [InlineData("[]", "must name a folder inside checkpoints/")]
    public async Task A_latest_json_that_points_elsewhere_or_does_not_parse_is_refused_naming_it(string content, string reason)
    {
        var (fixture, resume) = await RunAsync();
        using var _ = fixture;
        string pointer = Path.Combine(resume.OutputDirectory, CheckpointStore.LatestFileName);
        File.WriteAllText(pointer, content);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(resume));
        Assert.Contains(pointer, error.Message);
        Assert.Contains(reason, error.Message);
        var cli = await CliHarness.RunAsync("pretrain", "--shards", resume.Shards!, "--objective", "beit", "--model", resume.Model, "--out", resume.OutputDirectory,
            "--steps", "4", "--batch", "4", "--resume");
        Assert.Equal(MimFlow.Cli.MimFlowCli.Failure, cli.ExitCode);
        Assert.Contains(reason, cli.Error);
    }
}
