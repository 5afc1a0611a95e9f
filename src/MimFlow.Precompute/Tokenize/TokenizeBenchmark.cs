using System.Diagnostics;
using MimFlow.Core.Randomness;
using static TorchSharp.torch;

namespace MimFlow.Precompute.Tokenize;

/// <summary>Pre-tokenization speed against its ceiling: the same models' forward-only rate on resident batches.</summary>
/// <param name="WarmUpImages">Images the pipeline tokenized, untimed, before the timed run.</param>
public sealed record TokenizeBenchmarkResult(int Images, double ForwardOnlyImagesPerSecond, double PipelineImagesPerSecond, double InputWaitShare, string Arithmetic,
    int WarmUpImages)
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

    /// <summary>The benchmark of pre-tokenizing <paramref name="dataRoot"/> with <see cref="TokenizeRequest"/>'s defaults.</summary>
    public static TokenizeBenchmarkRequest For(string dataRoot) => new(new TokenizeRequest { DataRoot = dataRoot, OutputDirectory = "" });
}

public static class TokenizeBenchmark
{
    /// <summary>
    /// Measures, in one run on one device, (1) forward-only: the tokenizer and teacher on random uint8 batches already
    /// in memory (upload, normalisation and encoding of the outputs included, as the pipeline does them), and (2) the
    /// whole pre-tokenization of the first <see cref="TokenizeBenchmarkRequest.Images"/> images into a scratch folder.
    /// Each side is warmed up first (a step; a batch's worth of images), so the figures are steady-state rates.
    /// </summary>
    public static async Task<TokenizeBenchmarkResult> RunAsync(TokenizeBenchmarkRequest benchmark, CancellationToken cancellationToken = default)
    {
        var (request, images) = (benchmark.Tokenize, benchmark.Images);
        string scratch = Path.Combine(Path.GetTempPath(), "mimflow-bench-tokenize", Guid.NewGuid().ToString("N"));
        try
        {
            double forward;
            string arithmetic;
            using (var models = new FrozenModels(request.TokenizerDirectory, request.TeacherDirectory, request.Teacher, request.Device ?? CPU, request.ImageSize))
            {
                arithmetic = models.Arithmetic;
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
                Step();
                int batches = Math.Max(1, (images * request.Views + batch - 1) / batch);
                var clock = Stopwatch.StartNew();
                for (int b = 0; b < batches; b++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    Step();
                }
                forward = (double)batches * batch / request.Views / clock.Elapsed.TotalSeconds;
            }
            // Both sides warm up first: forward-only ran a step above; the pipeline tokenizes one batch's worth of images
            // (its own scratch set), so the timed run does not pay for JIT-compiling the loader, decoder and shard writer,
            // which a run over a real dataset pays once in hours.
            var warmUp = await TokenizeJob.RunAsync(request with { OutputDirectory = Path.Combine(scratch, "warm-up"), Limit = Math.Min(images, request.BatchSize) },
                cancellationToken: cancellationToken);
            var run = await TokenizeJob.RunAsync(request with { OutputDirectory = Path.Combine(scratch, "timed"), Limit = images }, cancellationToken: cancellationToken);
            return new TokenizeBenchmarkResult(images, forward, run.ImagesPerSecond, run.InputWaitShare, arithmetic, warmUp.SamplesProcessed);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }
}
