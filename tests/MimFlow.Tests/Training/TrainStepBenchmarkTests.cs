using MimFlow.Models.Backbones;
using MimFlow.Torch.Backend;
using MimFlow.Training.Benchmarks;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

public sealed class TrainStepBenchmarkTests
{
    private static readonly VitConfig Tiny = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2 };

    [Fact]
    public void A_bf16_step_with_fp32_masters_matches_fp32_gradients_and_is_timed()
    {
        TorchBackend.EnsureLoaded();
        var request = new TrainStepRequest { Config = Tiny, BatchSize = 8, MaskedPatches = 6, Codebook = 64, WarmupSteps = 1, Steps = 2 };
        var bf16 = TrainStepBenchmark.Run(request);
        Assert.InRange(bf16.GradientRelativeError, 1e-6, 0.05);
        Assert.InRange(Math.Abs(bf16.LossCompute - bf16.LossFp32), 0, 0.05 * bf16.LossFp32);
        Assert.True(bf16.ImagesPerSecond > 0 && bf16.StepMilliseconds > 0);
        Assert.Equal("bfloat16", bf16.ComputeType);

        var fp32 = TrainStepBenchmark.Run(request with { ComputeType = ScalarType.Float32 });
        Assert.Equal(0, fp32.GradientRelativeError);
        Assert.Equal(bf16.LossFp32, fp32.LossFp32, 1e-6);
    }

    [Fact]
    public void Training_flops_of_beit_base_follow_the_matmul_count()
    {
        var config = Architectures.Get("beit-base");
        double forward = TrainStepBenchmark.TrainFlopsPerImage(config, 75, 8192) / 3;
        // ViT-B/16 at 224 is about 17.6 GMACs = 35 GFLOPs forward; the MIM head on 75 tokens adds 2·75·768·8192.
        Assert.InRange(forward - 2.0 * 75 * 768 * 8192, 34.5e9, 35.5e9);
    }
}
