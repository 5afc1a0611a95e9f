using System.Text.Json;
using MimFlow.Core.Diagnostics;
using MimFlow.Precompute.Tokenize;
using MimFlow.Training.Benchmarks;

namespace MimFlow.Benchmarks;

/// <summary>The <c>--json</c> documents of the single-stage benchmarks, with the machine they ran on.</summary>
public static class BenchReports
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static string Train(TrainStepResult result, IReadOnlyList<PeerStep> peers) => JsonSerializer.Serialize(new
    {
        benchmark = "train", result.Model, batch = result.BatchSize, dtype = result.ComputeType, device = result.Device,
        images_per_second = result.ImagesPerSecond, step_ms = result.StepMilliseconds, mfu = result.Mfu, train_flops_per_image = result.TrainFlopsPerImage,
        device_memory_in_use_bytes = result.DeviceMemoryInUseBytes, loss_fp32 = result.LossFp32, loss_compute = result.LossCompute, gradient_relative_error = result.GradientRelativeError,
        peer = peers.Select(p => new { mode = p.Mode, images_per_second = p.ImagesPerSecond, step_ms = p.StepMilliseconds, peak_memory = p.PeakMemory }),
    }, Json);

    public static string Tokenize(TokenizeRequest request, TokenizeBenchmarkResult result)
    {
        var host = HostFacts.Read();
        return JsonSerializer.Serialize(new
        {
            benchmark = "tokenize", tokenizer = request.TokenizerDirectory, teacher = request.TeacherDirectory, images = result.Images, warm_up_images = result.WarmUpImages, warm_up_steps = result.WarmUpSteps, batch = request.BatchSize,
            arithmetic = result.Arithmetic, forward_only_images_per_second = result.ForwardOnlyImagesPerSecond,
            images_per_second = result.PipelineImagesPerSecond, ratio = result.Ratio, input_wait_share = result.InputWaitShare,
            machine = new { host.OperatingSystem, host.LogicalCores, dotnet = host.DotnetVersion },
        }, Json);
    }
}
