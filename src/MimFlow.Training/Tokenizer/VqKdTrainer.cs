using System.Diagnostics;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Teachers;
using MimFlow.Models.Tokenizers;
using MimFlow.Training.Distributed;
using MimFlow.Training.Kernel;
using MimFlow.Training.Optimization;
using MimFlow.Training.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Tokenizer;

/// <summary>What <c>mimflow train-tokenizer --objective vqkd</c> runs.</summary>
public sealed record VqKdTrainRequest
{
    public required string Data { get; init; }
    public DatasetLayout Layout { get; init; } = DatasetLayout.ImageNet;

    /// <summary>The frozen teacher whose features the tokenizer learns to reconstruct (a ViT model directory: CLIP, DINO).</summary>
    public required string Teacher { get; init; }

    /// <summary>An architecture (<c>vqkd-base</c>, …) or a VQ-KD model directory to start from.</summary>
    public string Model { get; init; } = "vqkd-base";

    public required string OutputDirectory { get; init; }
    public long? Steps { get; init; }
    public int? Epochs { get; init; }
    public int BatchSize { get; init; } = 64;
    public ulong Seed { get; init; }
    public Device? Device { get; init; }
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>BEiT v2 trains VQ-KD with AdamW at 5e-5 (batch 1024), β2 0.99, weight decay 1e-4, cosine.</summary>
    public double LearningRate { get; init; } = 5e-5;
    public double MinLearningRate { get; init; } = 1e-5;
    public long? WarmupSteps { get; init; }
    public double Beta2 { get; init; } = 0.99;
    public double WeightDecay { get; init; } = 1e-4;

    /// <summary>Gradient clipping by global norm (null: none).</summary>
    public double? ClipGradient { get; init; } = 3.0;

    /// <summary>Consecutive non-finite losses tolerated (each step skipped and counted) before the run stops.</summary>
    public int MaxConsecutiveNonFinite { get; init; } = 5;

    /// <summary>Codes whose usage EMA falls below this are restarted from recent encoder outputs every <see cref="RestartEvery"/> steps.</summary>
    public double DeadCodeThreshold { get; init; } = 1e-3;
    public int RestartEvery { get; init; } = 50;

    public void Validate()
    {
        if ((Steps is null) == (Epochs is null)) throw new ArgumentException("give exactly one of --steps and --epochs");
        if (BatchSize < 1 || RestartEvery < 1) throw new ArgumentException("the batch size and the restart interval must be at least 1");
    }
}

public sealed record VqKdTrainResult(long Steps, double FirstLoss, double LastLoss, double CodebookUsage, int CodesRestarted, double ImagesPerSecond, string Tokenizer);

/// <summary>
/// BEiT v2's vector-quantised knowledge distillation: the tokenizer (ViT encoder → l2-normalised codebook → decoder)
/// learns to reconstruct the frozen teacher's patch features of the same view, loss = 1 − cosine + the commitment
/// term; the codebook follows the encoder by EMA and straight-through gradients reach the encoder; dead codes are
/// restarted. Views come from the data pipeline (RandomResizedCrop + flip at the tokenizer's size). Writes
/// metrics.jsonl (loss terms, lr, codebook usage) and the trained tokenizer as a model directory (<c>tokenizer/</c>),
/// ready for <c>mimflow tokenize</c>.
/// </summary>
public static class VqKdTrainer
{
    /// <param name="collective">Data parallelism (null: one process): each rank encodes its rows of every global batch;
    /// the codebook's EMA statistics are summed over the ranks and a dead-code restart takes rank 0's draw, so every
    /// rank's codebook is the same; rank 0 alone writes.</param>
    public static async Task<VqKdTrainResult> RunAsync(VqKdTrainRequest request, IProgress<TrainStepProgress>? progress = null, CancellationToken cancellationToken = default,
        ICollective? collective = null)
    {
        request.Validate();
        using var rank = RankRun.Start(collective, request.OutputDirectory, "train-tokenizer", request.BatchSize);
        collective = rank.Collective;
        var rows = rank.Rows;
        var device = request.Device ?? CPU;
        string tokenizerDirectory = Path.Combine(request.OutputDirectory, "tokenizer");
        if (File.Exists(Path.Combine(tokenizerDirectory, ModelDirectory.ConfigFileName)))
            throw new InvalidOperationException($"{request.OutputDirectory}: holds a trained tokenizer already; choose a new folder");
        rank.VerifySameOptions(request with { Device = null, DecodeWorkers = 0 }, device);

        var (spec, module) = Directory.Exists(request.Model) ? ModelDirectory.Load(request.Model) : (ModelCatalog.Spec(request.Model), null);
        if (spec.Kind != ModelKind.Vqkd) throw new ArgumentException($"{request.Model}: a {spec.Kind} model; train-tokenizer --objective vqkd needs a VQ-KD (vqkd-tiny, vqkd-base or a directory)");
        var (teacherSpec, teacher) = ModelDirectory.LoadVit(request.Teacher, spec.Vqkd!.Encoder.ImgSize);
        int teacherDim = spec.Vqkd.TeacherDim;
        var teacherOptions = teacherSpec.Config!.NumClasses == teacherDim ? new TeacherOptions(Project: true)
            : teacherSpec.Config.EmbedDim == teacherDim ? new TeacherOptions()
            : throw new ArgumentException($"{request.Teacher}: features of {teacherSpec.Config.EmbedDim} (head {teacherSpec.Config.NumClasses}), the tokenizer reconstructs {teacherDim}");
        var teacherStatistics = InputStatistics.For(teacherSpec.Config);

        using var tokenizer = module as VqKd ?? (VqKd)ModelCatalog.Create(spec, (long)request.Seed);
        if (collective.WorldSize > 1) tokenizer.Quantizer.StatisticsReducer = statistics => collective.AllReduceSum(statistics, "VQ-KD codebook statistics");
        using (teacher)
        {
            teacher.eval();
            teacher.to(device);
            tokenizer.to(device);
            tokenizer.train();
            var index = DatasetSource.Open(request.Data, request.Layout);
            int size = spec.Vqkd.Encoder.ImgSize;
            var options = new LoaderOptions
            {
                BatchSize = request.BatchSize, Seed = request.Seed, Format = PixelFormat.UInt8, KeepPartialBatch = false, DecodeWorkers = request.DecodeWorkers,
            };
            long batchesPerEpoch = index.Count / request.BatchSize;
            if (batchesPerEpoch == 0) throw new ArgumentException($"{request.Data}: too few images for one batch of {request.BatchSize}");
            long totalSteps = request.Steps ?? request.Epochs!.Value * batchesPerEpoch;
            using var optimizer = new FlatAdamW(ParameterGroups.Build(tokenizer), new AdamWOptions { Beta2 = request.Beta2, WeightDecay = request.WeightDecay });
            var kernel = new TrainerKernel(optimizer, request.Seed, device, request.ClipGradient, collective);
            var schedule = CosineSchedule.LearningRate(request.LearningRate, request.MinLearningRate, totalSteps, request.WarmupSteps ?? Math.Min(totalSteps / 10, batchesPerEpoch));
            using var metrics = collective.Writes() ? MetricsLog.Open(request.OutputDirectory, null, collective.WorldSize) : MetricsLog.Discard(collective.WorldSize);
            if (collective.Writes())
                RunRecord.Append(request.OutputDirectory, "train-tokenizer", request, device, "float32", collective.WorldSize, totalSteps,
                    [RunInput.Model("model", request.Model), RunInput.Model("teacher", request.Teacher), RunInput.Dataset(request.Data, MimFlow.Data.Sources.DatasetLayouts.Name(request.Layout))]);
            var tracker = new StepTracker(metrics, request.MaxConsecutiveNonFinite);
            var restartGenerator = new Generator((ulong)StableRandom.For(request.Seed, "dead-codes").NextUInt64());
            int restarted = 0;
            long step = 0;
            var clock = Stopwatch.StartNew();
            for (int epoch = 0; step < totalSteps; epoch++)
            {
                var epochOptions = options with { Epoch = epoch };
                if (!rows.IsWhole)
                {
                    int[] order = new DataflowLoader(index, new PretrainRecipe(size, SecondViewSize: null), epochOptions).EpochOrder();
                    epochOptions = epochOptions with { Samples = rows.TakeFrom(order), BatchSize = rows.Count };
                }
                var loader = new DataflowLoader(index, new PretrainRecipe(size, SecondViewSize: null), epochOptions);
                var wait = Stopwatch.StartNew();
                await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
                {
                    double waited = wait.Elapsed.TotalSeconds;
                    using (batch)
                    using (var scope = NewDisposeScope())
                    {
                        var stepClock = Stopwatch.StartNew();
                        var pixels = tensor(batch.ViewBytes(0).ToArray(), [batch.Count, 3, size, size]).to(device).to(ScalarType.Float32) / 255f;
                        Tensor target;
                        using (no_grad())
                            target = TeacherFeatures.Extract(teacher, teacherStatistics.Normalise(pixels), teacherOptions);
                        double lr = schedule.ValueAt(step);
                        Quantized? quantized = null;
                        var outcome = kernel.Step(step, lr, tokenizer, () =>
                        {
                            (var reconstruction, quantized) = tokenizer.forward(InputStatistics.ImageNet.Normalise(pixels));
                            // Both terms are means over the rows' tokens (a fixed number per image): the images are the items.
                            return new LocalLoss(VqKd.Loss(reconstruction, target, quantized), batch.Count,
                                new Dictionary<string, double> { ["commit"] = quantized.CommitmentLoss.item<float>() });
                        }, rows: rows);
                        if (outcome.Applied && (step + 1) % request.RestartEvery == 0)
                        {
                            restarted += tokenizer.Quantizer.RestartDeadCodes(quantized!.Codes, request.DeadCodeThreshold, restartGenerator);
                            if (collective.WorldSize > 1) ShareRankZeroCodebook(collective, tokenizer.Quantizer, step);
                        }
                        // The batch's codebook use is this rank's rows' (rank 0's in metrics.jsonl).
                        double used = quantized!.Indices.unique().output.shape[0] / (double)tokenizer.Quantizer.Codes;
                        double commitment = outcome.Metrics!["commit"];
                        bool stop = tracker.Record(step, epoch, outcome.Loss, lr, rows.Global, stepClock.Elapsed.TotalSeconds, waited, new Dictionary<string, object>
                        {
                            ["loss_rec"] = outcome.Loss - commitment, ["loss_commit"] = commitment, ["codebook_used_in_batch"] = used,
                        });
                        progress?.Report(new TrainStepProgress(step, totalSteps, tracker.LastFigures));
                        if (stop) throw new InvalidOperationException($"{tracker.StopReason(step)}: stopped (lower --lr)");
                    }
                    if (++step >= totalSteps) break;
                    wait.Restart();
                }
            }
            double usage;
            using (no_grad()) usage = tokenizer.Quantizer.ClusterSize.gt(request.DeadCodeThreshold).sum().item<long>() / (double)tokenizer.Quantizer.Codes;
            tokenizer.eval();
            if (collective.Writes()) ModelDirectory.Save(tokenizerDirectory, spec with { Architecture = spec.Architecture }, tokenizer);
            return new VqKdTrainResult(step, tracker.FirstLoss, tracker.LastLoss, usage, restarted, tracker.Images / clock.Elapsed.TotalSeconds, tokenizerDirectory);
        }
    }

    /// <summary>
    /// After a dead-code restart every rank drew from its own encoder outputs: all take rank 0's codebook and usage
    /// (the others contribute zeros to a sum, which leaves rank 0's values exact).
    /// </summary>
    private static void ShareRankZeroCodebook(ICollective collective, NormEmaQuantizer quantizer, long step)
    {
        using var noGrad = no_grad();
        foreach (var (tensor, name) in new[] { (quantizer.Codebook, "codebook"), (quantizer.ClusterSize, "code usage") })
        {
            using var copy = tensor.detach().contiguous().clone();
            if (collective.Rank != 0) copy.zero_();
            collective.AllReduceSum(copy, $"VQ-KD {name} after the restart at step {step}");
            tensor.copy_(copy);
        }
    }
}
