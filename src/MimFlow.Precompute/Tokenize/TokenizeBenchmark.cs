using System.Diagnostics;
using MimFlow.Core.Diagnostics;
using MimFlow.Core.Randomness;
using MimFlow.Data.Sources;
using static TorchSharp.torch;

namespace MimFlow.Precompute.Tokenize;

/// <summary>Pre-tokenization speed against its ceiling: the same models' forward-only rate on resident batches.</summary>
/// <param name="Images">Images timed on each side: the request's, or the data's part when it has fewer.</param>
/// <param name="WarmUpImages">Images the pipeline tokenized, untimed, before the timed run (its warm-up passes together).</param>
/// <param name="WarmUpSteps">Untimed forward-only steps before its timed ones.</param>
public sealed record TokenizeBenchmarkResult(int Images, double ForwardOnlyImagesPerSecond, double PipelineImagesPerSecond, double InputWaitShare, string Arithmetic,
    int WarmUpImages, int WarmUpSteps)
{
    /// <summary>Pipeline rate / forward-only rate (the goal is ≥ 0.9: the model is rarely waiting).</summary>
    public double Ratio => PipelineImagesPerSecond / ForwardOnlyImagesPerSecond;
}

/// <summary>What <c>mimflow bench tokenize</c> measures: the pre-tokenization <see cref="Tokenize"/> of the first <see cref="Images"/> images.</summary>
/// <param name="Tokenize">The pre-tokenization; its output folder is not used (the run writes into a scratch folder it removes).</param>
public sealed record TokenizeBenchmarkRequest(TokenizeRequest Tokenize)
{
    /// <summary>Images pre-tokenized, and the forward-only equivalent.</summary>
    public int Images { get; init; } = 256;

    /// <summary>How both sides are warmed up before they are timed.</summary>
    public JitWarmUp WarmUp { get; init; } = new();

    /// <summary>The benchmark of pre-tokenizing <paramref name="dataRoot"/> with <see cref="TokenizeRequest"/>'s defaults.</summary>
    public static TokenizeBenchmarkRequest For(string dataRoot) => new(new TokenizeRequest { DataRoot = dataRoot, OutputDirectory = "" });
}

public static class TokenizeBenchmark
{
    /// <summary>
    /// Measures, in one run on one device, (1) forward-only: the tokenizer and teacher on random uint8 batches already
    /// in memory (upload, normalisation and encoding of the outputs included, as the pipeline does them), and (2) the
    /// whole pre-tokenization of the first <see cref="TokenizeBenchmarkRequest.Images"/> images into a scratch folder.
    /// Both sides are the same number of images, and each is warmed up until the JIT is quiet (<see cref="JitWarmUp"/>:
    /// forward-only by steps, the pipeline by pre-tokenizing one batch's worth of images per pass), so the figures are
    /// the steady-state rates a run over a whole dataset has; the pipeline's timed run still pays what every run pays
    /// (loading the models, filling the first batch, writing the last shard). Forward-only's timed steps are split
    /// around the pipeline's run.
    /// </summary>
    public static async Task<TokenizeBenchmarkResult> RunAsync(TokenizeBenchmarkRequest benchmark, CancellationToken cancellationToken = default)
    {
        var request = benchmark.Tokenize;
        var index = DatasetSource.Open(request.DataRoot, request.Layout, request.Split, request.GroundTruth);
        var (first, end) = TokenizeJob.PartRange(index.Count, request.ShardIndex, request.ShardCount, benchmark.Images);
        int images = end - first;
        var warmUp = benchmark.WarmUp;
        string scratch = Path.Combine(Path.GetTempPath(), "mimflow-bench-tokenize", Guid.NewGuid().ToString("N"));
        try
        {
            using var models = new FrozenModels(request.TokenizerDirectory, request.TeacherDirectory, request.Teacher, request.Device ?? CPU, request.ImageSize);
            int side = models.ImageSize, batch = request.BatchSize;
            var random = StableRandom.For(1, "bench-tokenize");
            byte[] main = new byte[batch * 3 * side * side];
            byte[] second = models.SecondViewSize is int s ? new byte[batch * 3 * s * s] : [];
            for (int i = 0; i < main.Length; i++) main[i] = (byte)random.NextInt(0, 255);
            for (int i = 0; i < second.Length; i++) second[i] = (byte)random.NextInt(0, 255);
            void Step()
            {
                if (models.TokenizerSpec is not null)
                    _ = models.SecondViewSize is int s2 ? models.Codes(second, batch, s2) : models.Codes(main, batch, side);
                if (models.TeacherSpec is not null) _ = models.Features(main, batch, side, request.FeatureEncoding);
            }
            double TimeSteps(int steps)
            {
                var clock = Stopwatch.StartNew();
                for (int b = 0; b < steps; b++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    Step();
                }
                return clock.Elapsed.TotalSeconds;
            }

            int warmUpSteps = await warmUp.RunAsync(_ =>
            {
                Step();
                return Task.CompletedTask;
            }, cancellationToken);
            // Forward-only is timed half before and half after the pipeline, so a change in the host's speed during the
            // run weighs on both sides alike.
            int batches = Math.Max(1, (images * request.Views + batch - 1) / batch);
            double forwardSeconds = TimeSteps((batches + 1) / 2);

            int warmUpImages = 0, pass = 0;
            await warmUp.RunAsync(async token =>
            {
                var run = await TokenizeJob.RunAsync(request with { OutputDirectory = Path.Combine(scratch, $"warm-up-{pass++}"), Limit = Math.Min(images, request.BatchSize) },
                    index, cancellationToken: token);
                warmUpImages += run.SamplesProcessed;
            }, cancellationToken);
            var timed = await TokenizeJob.RunAsync(request with { OutputDirectory = Path.Combine(scratch, "timed"), Limit = images }, index, cancellationToken: cancellationToken);

            forwardSeconds += TimeSteps(batches / 2);
            double forward = (double)batches * batch / request.Views / forwardSeconds;
            return new TokenizeBenchmarkResult(images, forward, timed.ImagesPerSecond, timed.InputWaitShare, models.Arithmetic, warmUpImages, warmUpSteps);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }
}
