using System.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Sources;

namespace MimFlow.Data.Pipeline;

/// <param name="Workers">Decode workers (cores used for decoding).</param>
/// <param name="Images">Images timed (the first batch, a warm-up, is excluded as the peer excludes it).</param>
/// <param name="CpuSecondsPerImage">Process CPU time (every thread) per timed image: steadier than wall time on a busy machine.</param>
public sealed record LoaderBenchmarkResult(int Workers, int Images, double Seconds, double ImagesPerSecond, double ImagesPerSecondPerCore, double CpuSecondsPerImage = 0);

/// <summary>Times decode + augment + collate of a recipe (float32 output, as the peer's ToTensor + Normalize).</summary>
public static class LoaderBenchmark
{
    public static async Task<LoaderBenchmarkResult> RunAsync(SampleIndex index, IAugmentRecipe recipe, int workers, int images, int batchSize, CancellationToken cancellationToken)
    {
        var options = new LoaderOptions
        {
            BatchSize = batchSize, DecodeWorkers = workers, ReadConcurrency = Math.Max(4, workers), Format = PixelFormat.Float32,
            Limit = images, KeepPartialBatch = false, Seed = 1,
        };
        var loader = new DataflowLoader(index, recipe, options);
        Stopwatch? watch = null;
        TimeSpan cpuStart = default;
        int timed = 0;
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
        {
            using (batch)
            {
                if (watch is null)
                {
                    watch = Stopwatch.StartNew();
                    cpuStart = Process.GetCurrentProcess().TotalProcessorTime;
                }
                else timed += batch.Count;
            }
        }
        double seconds = watch?.Elapsed.TotalSeconds ?? 0;
        double cpu = watch is null ? 0 : (Process.GetCurrentProcess().TotalProcessorTime - cpuStart).TotalSeconds;
        double rate = seconds > 0 ? timed / seconds : 0;
        return new LoaderBenchmarkResult(workers, timed, seconds, rate, rate / workers, timed > 0 ? cpu / timed : 0);
    }
}
