using System.Diagnostics;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Training.Objectives;
using MimFlow.Training.Distributed;
using MimFlow.Training.Optimization;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Benchmarks;

/// <summary>What <c>mimflow bench train</c> measures: a BEiT masked-image-modeling step on synthetic batches.</summary>
public sealed record TrainStepRequest
{
    public string Model { get; init; } = "beit-base";
    public int BatchSize { get; init; } = 128;
    public ScalarType ComputeType { get; init; } = ScalarType.BFloat16;
    public int WarmupSteps { get; init; } = 8;
    public int Steps { get; init; } = 20;
    public int MaskedPatches { get; init; } = 75;
    public int Codebook { get; init; } = 8192;
    public Device? Device { get; init; }

    /// <summary>The device's dense peak for <see cref="ComputeType"/> in TFLOP/s, for MFU (null: the known peak of the
    /// device, <see cref="DevicePeaks"/>, else MFU is not reported).</summary>
    public double? PeakTflops { get; init; }

    /// <summary>Override of the architecture (tests, free configs).</summary>
    public VitConfig? Config { get; init; }
}

/// <param name="GradientRelativeError">‖g_compute − g_fp32‖ / ‖g_fp32‖ over all parameters on the same batch and weights.</param>
public sealed record TrainStepResult(
    string Model, int BatchSize, string ComputeType, double ImagesPerSecond, double StepMilliseconds, double? Mfu, double TrainFlopsPerImage,
    double LossFp32, double LossCompute, double GradientRelativeError, string Device, long? DeviceMemoryInUseBytes)
{
    /// <summary>Ranks the global batch was spread over (1: one process).</summary>
    public int WorldSize { get; init; } = 1;

    /// <summary>Time per step in the gradient all-reduce (0 for one process).</summary>
    public double AllReduceMilliseconds { get; init; }

    /// <summary>Bytes of the flat fp32 gradient buffer each step all-reduces.</summary>
    public long GradientBytes { get; init; }

    /// <summary>The collective ("single", "mpi", "nccl").</summary>
    public string Backend { get; init; } = "single";
}

/// <summary>
/// The step the peer (<c>peer_beit_step.py</c>) times: BEiT backbone with the mask token and shared relative position
/// bias, MIM head over 8192 codes at 75 masked patches, cross-entropy, backward, clipping at 3.0, AdamW. Correctness
/// first: on one batch, the loss and every gradient in the compute type (bf16 copy with fp32 masters) are compared
/// with fp32; then the step is timed after warmup, synchronising the device around the timed steps.
/// </summary>
public static class TrainStepBenchmark
{
    /// <param name="collective">Data parallelism: each rank steps on its rows of the global batch of
    /// <see cref="TrainStepRequest.BatchSize"/> and the flat gradient buffer is all-reduced every step (timed).</param>
    public static TrainStepResult Run(TrainStepRequest request, CancellationToken cancellationToken = default, ICollective? collective = null)
    {
        collective ??= SingleProcess.Instance;
        var rows = BatchSlice.Of(request.BatchSize, collective.Rank, collective.WorldSize);
        var device = request.Device ?? CPU;
        var config = (request.Config ?? ModelCatalog.Spec(request.Model).Config
            ?? throw new ArgumentException($"{request.Model} is not a ViT")) with { UseMaskToken = true, NumClasses = 0, UseRelPosBias = false, UseSharedRelPosBias = true };
        if (request.MaskedPatches >= config.NumPatches) throw new ArgumentException($"{request.MaskedPatches} masked of {config.NumPatches} patches");

        var master = NewObjective(config, request.Codebook, device);
        var shadowObjective = NewObjective(config, request.Codebook, device);
        using var masterModule = master;
        using var shadowModule = shadowObjective;
        using var optimizer = new FlatAdamW(ParameterGroups.Build(master), new AdamWOptions());
        using var shadow = request.ComputeType == ScalarType.Float32 ? null : new LowPrecisionShadow(shadowModule, optimizer, request.ComputeType);

        using var generator = new Generator(0, device);
        // Both copies drop the same paths (stochastic depth from one seed), so only the arithmetic differs.
        using var masterPaths = new Generator(1, device);
        using var shadowPaths = new Generator(1, device);
        var pixels = randn([request.BatchSize, 3, config.ImgSize, config.ImgSize], generator: generator, device: device);
        var codes = randint(0, request.Codebook, [request.BatchSize, config.NumPatches], generator: generator, device: device);
        var mask = rand([request.BatchSize, config.NumPatches], generator: generator, device: device).argsort(1).lt(request.MaskedPatches);

        // Correctness on one batch: fp32 gradients, then the compute type's, both from the same master weights.
        double lossFp32, lossCompute, gradientError;
        using (var scope = NewDisposeScope())
        {
            optimizer.ZeroGrad();
            StepRandomness.UseGenerator(master, masterPaths);
            using var fp32 = master.Loss(pixels, mask, codes);
            fp32.Total.backward();
            lossFp32 = fp32.Total.item<float>();
            var reference = optimizer.FlatGradients.clone();
            optimizer.ZeroGrad();
            if (shadow is null)
            {
                lossCompute = lossFp32;
                gradientError = 0;
            }
            else
            {
                shadow.PullWeights();
                StepRandomness.UseGenerator(shadowObjective, shadowPaths);
                using var low = shadowObjective.Loss(pixels.to(request.ComputeType), mask, codes);
                low.Total.backward();
                lossCompute = low.Total.to(ScalarType.Float32).item<float>();
                shadow.PushGradients();
                gradientError = (optimizer.FlatGradients - reference).norm().item<float>() / reference.norm().item<float>();
                optimizer.ZeroGrad();
            }
        }

        var input = shadow is null ? pixels : pixels.to(request.ComputeType);
        var mine = (Input: input.narrow(0, rows.Offset, rows.Count), Mask: mask.narrow(0, rows.Offset, rows.Count), Codes: codes.narrow(0, rows.Offset, rows.Count));
        var reducing = new Stopwatch();
        void Step()
        {
            using var scope = NewDisposeScope();
            if (shadow is null)
            {
                using var loss = master.Loss(mine.Input, mine.Mask, mine.Codes);
                loss.Total.backward();
            }
            else
            {
                shadow.PullWeights();
                using var loss = shadowObjective.Loss(mine.Input, mine.Mask, mine.Codes);
                loss.Total.backward();
                shadow.PushGradients();
            }
            if (collective is not SingleProcess)
            {
                // The kernel's two collectives of a step: the loss sums (host) and the flat gradient buffer.
                reducing.Start();
                collective.AllReduceSum(new double[4], "bench loss");
                collective.AllReduceSum(optimizer.FlatGradients, "bench gradients");
                Synchronize(device);
                reducing.Stop();
            }
            optimizer.ClipGradNorm(3.0);
            optimizer.Step(1.5e-3);
            optimizer.ZeroGrad();
        }
        for (int i = 0; i < request.WarmupSteps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Step();
        }
        Synchronize(device);
        reducing.Reset();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < request.Steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Step();
        }
        Synchronize(device);
        // TorchSharp exposes no allocator statistics: the driver's view of memory in use (NVML) after the timed steps
        // stands in for the peak (the caching allocator keeps what the step needed).
        long? memory = device.type == DeviceType.CUDA && MimFlow.Torch.Diagnostics.GpuInventory.Read() is { Count: > 0 } gpus
            ? gpus[0].TotalMemoryBytes - gpus[0].FreeMemoryBytes : null;
        double seconds = clock.Elapsed.TotalSeconds / request.Steps;
        double flops = TrainFlopsPerImage(config, request.MaskedPatches, request.Codebook);
        double imagesPerSecond = request.BatchSize / seconds;
        double? peakTflops = request.PeakTflops ?? DevicePeaks.DenseTflops(request.Device ?? CPU, request.ComputeType);
        double? mfu = peakTflops is double peak ? imagesPerSecond * flops / (peak * 1e12) : null;
        return new TrainStepResult(request.Model, request.BatchSize, request.ComputeType.ToString().ToLowerInvariant(), imagesPerSecond, seconds * 1000, mfu,
            flops, lossFp32, lossCompute, gradientError, device.ToString(), memory)
        {
            WorldSize = collective.WorldSize, GradientBytes = optimizer.Length * 4, AllReduceMilliseconds = reducing.Elapsed.TotalMilliseconds / request.Steps, Backend = collective.Backend,
        };
    }

    /// <summary>
    /// Model FLOPs of one training image (forward + backward = 3 × forward, matmuls only): per block 24·T·D² (qkv,
    /// projection, MLP at ratio 4) + 4·T²·D (scores and values), the patch embedding, and the MIM head on the masked
    /// tokens. T = 1 + N tokens.
    /// </summary>
    public static double TrainFlopsPerImage(VitConfig config, int masked, int codebook)
    {
        double tokens = config.NumPatches + 1, dim = config.EmbedDim, hidden = dim * config.MlpRatio;
        double block = 2 * tokens * dim * (3 * dim) + 2 * tokens * dim * dim + 2 * 2 * tokens * dim * hidden + 2 * 2 * tokens * tokens * dim;
        double embed = 2.0 * config.NumPatches * dim * config.InChannels * config.PatchSize * config.PatchSize;
        double head = 2.0 * masked * dim * codebook;
        return 3 * (config.Depth * block + embed + head);
    }

    private static BeitObjective NewObjective(VitConfig config, int codebook, Device device)
    {
        var objective = new BeitObjective(new VisionTransformer(config), codebook);
        objective.Initialize(0);
        objective.to(device);
        objective.train();
        return objective;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}

/// <summary>Dense peak throughput of the accelerators MimFlow is measured on, for MFU; null where unknown.</summary>
public static class DevicePeaks
{
    /// <summary>NVIDIA's dense (no sparsity) bf16/fp16 tensor-core figure for the H100 SXM and the H200, in TFLOP/s.</summary>
    public const double HopperDenseBf16 = 989;

    /// <summary><see cref="HopperDenseBf16"/> on an H100 or H200 in bf16 or fp16; null elsewhere.</summary>
    public static double? DenseTflops(Device device, ScalarType computeType)
    {
        if (device.type != DeviceType.CUDA || computeType is not (ScalarType.BFloat16 or ScalarType.Float16)) return null;
        string gpu = MimFlow.Torch.Diagnostics.GpuInventory.Read().FirstOrDefault()?.Name ?? "";
        return gpu.Contains("H100", StringComparison.Ordinal) || gpu.Contains("H200", StringComparison.Ordinal) ? HopperDenseBf16 : null;
    }
}
