using System.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;

namespace MimFlow.Training.Runs;

/// <summary>What one supervised step did: its loss, its images and any further values for the metrics line.</summary>
public readonly record struct SupervisedStep(double Loss, int Images, IReadOnlyDictionary<string, object>? Terms = null);

/// <summary>How a supervised loop reads its training split.</summary>
/// <param name="Rows">Data parallelism: this process's rows of each global batch of <paramref name="BatchSize"/> (null: all).</param>
public sealed record SupervisedData(SampleIndex Train, IAugmentRecipe Recipe, int BatchSize, ulong Seed, int DecodeWorkers, Distributed.BatchSlice? Rows = null);

/// <summary>Where a supervised loop begins: epoch 0 at step 0, or a checkpoint's epoch boundary when resuming.</summary>
public readonly record struct EpochStart(int Epoch, long Step)
{
    public static EpochStart Beginning => new(0, 0);
}

/// <summary>
/// The loop fine-tuning and segmentation share: epoch after epoch of the data pipeline (seeded shuffle, full batches,
/// float32), one step per batch with the scheduled learning rate, the step recorded by the <see cref="StepTracker"/>
/// (a run with too many non-finite losses in a row stops with an error), then the caller's end-of-epoch work
/// (evaluation, checkpoint). Ends after <paramref name="epochs"/> epochs or <paramref name="totalSteps"/> steps.
/// Every input of a step is a function of (seed, epoch, position) or (seed, step) and each epoch has its own loader,
/// so a loop started at a later epoch (<see cref="SupervisedCheckpoints{TEvaluation}"/>) reads the very batches an
/// uninterrupted one would.
/// </summary>
public static class SupervisedEpochs
{
    /// <returns>The steps taken by the end (those before <paramref name="start"/> included).</returns>
    public static async Task<long> RunAsync(SupervisedData data, int epochs, long totalSteps, EpochStart start, Func<long, double> learningRate, StepTracker tracker,
        Func<Batch, long, double, SupervisedStep> step, Action<long, int, SupervisedStep, double> reported, Func<int, long, Task> afterEpoch,
        CancellationToken cancellationToken)
    {
        long steps = start.Step;
        for (int epoch = start.Epoch; epoch < epochs && steps < totalSteps; epoch++)
        {
            var options = new LoaderOptions
            {
                BatchSize = data.BatchSize, Seed = data.Seed, Epoch = epoch, Shuffle = true, KeepPartialBatch = false,
                DecodeWorkers = data.DecodeWorkers, ReadConcurrency = Math.Max(2, data.DecodeWorkers), Format = PixelFormat.Float32,
            };
            var rows = data.Rows ?? Distributed.BatchSlice.Whole(data.BatchSize);
            if (!rows.IsWhole)
            {
                // This rank's rows of each global batch of the epoch's order, read in batches of its row count.
                int[] order = new DataflowLoader(data.Train, data.Recipe, options).EpochOrder();
                options = options with { Samples = rows.TakeFrom(order), BatchSize = rows.Count };
            }
            var loader = new DataflowLoader(data.Train, data.Recipe, options);
            var stepClock = Stopwatch.StartNew();
            var wait = Stopwatch.StartNew();
            await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            {
                double waited = wait.Elapsed.TotalSeconds;
                double rate = learningRate(steps);
                SupervisedStep outcome;
                using (batch) outcome = step(batch, steps, rate);
                double seconds = stepClock.Elapsed.TotalSeconds;
                bool stop = tracker.Record(steps, epoch, outcome.Loss, rate, rows.IsWhole ? outcome.Images : rows.Global, seconds, waited, outcome.Terms);
                reported(steps, epoch, outcome, seconds);
                steps++;
                if (stop) throw new InvalidOperationException($"{tracker.StopReason(steps - 1)}: stopped (lower --lr)");
                if (steps == totalSteps) break;
                stepClock.Restart();
                wait.Restart();
            }
            await afterEpoch(epoch, steps);
        }
        return steps;
    }
}
