using MimFlow.Core.IO;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Pretraining;

namespace MimFlow.Tests.Training;

/// <summary>Two runs into one output folder would interleave their metrics, shards and manifests: the second is refused.</summary>
public sealed class SecondWriterTests
{
    [Fact]
    public async Task Tokenize_pretrain_and_finetune_refuse_an_output_folder_another_process_is_writing()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 4);
        string shards = fixture.Combine("shards");
        using (OutputLock.Acquire(shards, "tokenize"))
        {
            var error = await Assert.ThrowsAsync<OutputInUseException>(() => TokenizeJob.RunAsync(fixture.Request(shards)));
            Assert.Contains(shards, error.Message);
        }
        Assert.False(File.Exists(Path.Combine(shards, "manifest.json")));
        await TokenizeJob.RunAsync(fixture.Request(shards));

        string run = fixture.Combine("run");
        using (OutputLock.Acquire(run, "pretrain"))
        {
            await Assert.ThrowsAsync<OutputInUseException>(() => Pretrainer.RunAsync(new PretrainRequest
            {
                Shards = shards, Objective = "beit", Model = "beit-tiny", OutputDirectory = run, Steps = 1, BatchSize = 2,
            }));
            await Assert.ThrowsAsync<OutputInUseException>(() => Finetuner.RunAsync(new FinetuneRequest
            {
                Task = FinetuneRequest.Classify, Model = "vit-tiny", Data = fixture.Data, OutputDirectory = run, Epochs = 1, BatchSize = 2,
            }));
        }
        Assert.False(File.Exists(Path.Combine(run, "metrics.jsonl")));
    }
}
