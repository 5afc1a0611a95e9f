using System.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Interop;
using MimFlow.Training.Distributed;
using MimFlow.Training.Optimization;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>What a task hands <see cref="SupervisedRun{TRequest,TResult}.TrainAsync"/>: its data, schedule, step, evaluation and checkpoint contents.</summary>
/// <param name="Layout">How the training data is stored, for the run record.</param>
/// <param name="Evaluate">The model's evaluation on the validation split; null: none.</param>
/// <param name="EvaluationScalars">An evaluation's figures for metrics.jsonl.</param>
/// <param name="WriteEvaluations">Rewrites the task's evaluation file with every evaluation so far.</param>
/// <param name="Spec">Describes <paramref name="Backbone"/>, the checkpoint's <c>backbone/</c> model directory.</param>
/// <param name="Model">Everything that trains, saved with the optimiser's state for a resume.</param>
/// <param name="Files">The task's further checkpoint files (name → text).</param>
public sealed record SupervisedLoop<TResult>(
    SampleIndex Train, IAugmentRecipe Recipe, DatasetLayout Layout, long TotalSteps, EpochStart Start, Func<long, double> LearningRate, FlatAdamW Optimizer,
    Func<Batch, long, double, SupervisedStep> Step, Func<CancellationToken, Task<TResult>>? Evaluate, Func<TResult, IReadOnlyDictionary<string, double>> EvaluationScalars,
    Action<IReadOnlyList<EpochEvaluation<TResult>>> WriteEvaluations, ModelSpec Spec, nn.Module Backbone, nn.Module Model, IReadOnlyDictionary<string, string>? Files = null)
    where TResult : class;

/// <summary>
/// What fine-tuning, linear probing and segmentation share around their own data, model and step: the rank's part
/// and the folder's lock (<see cref="RankRun"/>), the checkpoints to resume from
/// (<see cref="SupervisedCheckpoints{TEvaluation}"/>), the epoch length and the ranks' agreement on the options, then
/// the loop with its run record, metrics, evaluations, checkpoints and result.
/// </summary>
public sealed class SupervisedRun<TRequest, TResult> : IDisposable where TRequest : SupervisedRequest where TResult : class
{
    private readonly TRequest request;
    private readonly string task;
    private readonly int batchSize;
    private readonly int epochs;
    private readonly RankRun rank;

    private SupervisedRun(TRequest request, string task, int batchSize, int epochs, RankRun rank, SupervisedCheckpoints<EpochEvaluation<TResult>> checkpoints)
    {
        this.request = request;
        this.task = task;
        this.batchSize = batchSize;
        this.epochs = epochs;
        this.rank = rank;
        Checkpoints = checkpoints;
        Device = request.Device ?? CPU;
    }

    public ICollective Collective => rank.Collective;

    /// <summary>This rank's rows of each global batch.</summary>
    public BatchSlice Rows => rank.Rows;

    public Device Device { get; }

    public SupervisedCheckpoints<EpochEvaluation<TResult>> Checkpoints { get; }

    /// <summary>A resumed run that had already finished: its saved figures, to return without training; null otherwise.</summary>
    public SupervisedResult<TResult>? Finished => Checkpoints.Complete
        ? new SupervisedResult<TResult>(Checkpoints.StepsTaken, Checkpoints.Tally.FirstLoss, Checkpoints.Tally.LastLoss, Checkpoints.Tally.Skipped, 0,
            Checkpoints.Evaluations, Checkpoints.Checkpoint!) { WasComplete = true }
        : null;

    /// <param name="task">What trains: the lock's and the checkpoints' name for it, and the run record's command.</param>
    /// <param name="batchSize">The task's global batch (the tasks' records keep their own default).</param>
    /// <param name="epochs">The task's epochs, which tell a finished checkpoint from an unfinished one.</param>
    public static SupervisedRun<TRequest, TResult> Open(TRequest request, string task, int batchSize, int epochs, ICollective? collective)
    {
        var rank = RankRun.Start(collective, request.OutputDirectory, task, batchSize);
        try
        {
            var checkpoints = SupervisedCheckpoints<EpochEvaluation<TResult>>.Open(request.OutputDirectory, task, request.Seed, batchSize, epochs, request.Resume);
            return new SupervisedRun<TRequest, TResult>(request, task, batchSize, epochs, rank, checkpoints);
        }
        catch
        {
            rank.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Full batches per epoch of a training split of <paramref name="trainImages"/> images; then every rank checks that
    /// it resolved rank 0's options, so a mismatch fails before any model is built or data read.
    /// </summary>
    public long StepsPerEpoch(long trainImages)
    {
        long perEpoch = trainImages / batchSize;
        if (perEpoch == 0) throw new ArgumentException($"{request.Data}: {trainImages} training images make no full batch of {batchSize}");
        rank.VerifySameOptions(request with { Device = null, DecodeWorkers = 0 }, Device, Path.GetFileName(Checkpoints.Checkpoint) ?? "-");
        return perEpoch;
    }

    /// <summary>
    /// The epochs (<see cref="SupervisedEpochs"/>) with what every task does around its step: rank 0 adds this start to
    /// the run record and logs metrics.jsonl (continuing the checkpoint's tally), each step is reported, and at each
    /// epoch's end the replicas are checked, then rank 0 evaluates, records the evaluation and saves a checkpoint.
    /// </summary>
    public async Task<SupervisedResult<TResult>> TrainAsync(SupervisedLoop<TResult> loop, IProgress<SupervisedProgress<TResult>>? progress,
        CancellationToken cancellationToken)
    {
        using var metrics = Checkpoints.OpenMetrics(Collective);
        if (Collective.Writes())
            RunRecord.Append(request.OutputDirectory, task, request, Device, "float32", Collective.WorldSize, loop.TotalSteps,
                [RunInput.Model("model", request.Model), RunInput.Dataset(request.Data, DatasetLayouts.Name(loop.Layout))]);
        var tracker = Checkpoints.Tracker(metrics, request.MaxConsecutiveNonFinite);
        var clock = Stopwatch.StartNew();
        long steps = await SupervisedEpochs.RunAsync(
            new SupervisedData(loop.Train, loop.Recipe, batchSize, request.Seed, request.DecodeWorkers, Rows), epochs, loop.TotalSteps, loop.Start, loop.LearningRate,
            tracker, loop.Step,
            (at, epoch, outcome, seconds) => progress?.Report(new SupervisedProgress<TResult>(at, loop.TotalSteps, epoch, outcome.Loss, outcome.Images / seconds, null, tracker.LastFigures)),
            async (epoch, at) =>
            {
                TResult? result = null;
                if (Collective.WorldSize > 1) DataParallel.VerifyReplicas(Collective, loop.Optimizer.FlatParameters, at, request.OutputDirectory);
                // Rank 0 alone evaluates and saves; the others go on to the next epoch and wait for it in the first step's collective.
                if (!Collective.Writes()) return;
                if (loop.Evaluate is not null)
                {
                    result = await loop.Evaluate(cancellationToken);
                    Checkpoints.Evaluations.Add(new EpochEvaluation<TResult>(epoch, at, result));
                    loop.WriteEvaluations(Checkpoints.Evaluations);
                    metrics.Scalars(at, loop.EvaluationScalars(result));
                }
                // Saved before the progress report, so a run stopped from it (Ctrl-C) still resumes after this epoch.
                Checkpoints.Save(at, epoch + 1, tracker, loop.Spec, loop.Backbone, loop.Model, loop.Optimizer, loop.Files);
                if (result is not null) progress?.Report(new SupervisedProgress<TResult>(at - 1, loop.TotalSteps, epoch, tracker.LastLoss, 0, result, tracker.LastFigures));
            },
            cancellationToken);
        clock.Stop();
        return new SupervisedResult<TResult>(steps, tracker.FirstLoss, tracker.LastLoss, tracker.Skipped, tracker.Images / Math.Max(clock.Elapsed.TotalSeconds, 1e-9),
            Checkpoints.Evaluations, Checkpoints.Checkpoint!);
    }

    public void Dispose() => rank.Dispose();
}
