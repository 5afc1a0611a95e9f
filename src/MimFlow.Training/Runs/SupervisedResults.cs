namespace MimFlow.Training.Runs;

/// <summary>One epoch's evaluation (the step is the number of steps taken by its end).</summary>
public sealed record EpochEvaluation<TResult>(int Epoch, long Step, TResult Result);

/// <summary>Reported after each step, and after each epoch with its evaluation.</summary>
/// <param name="Figures">The numbers of the step's metrics line (loss, lr, images_per_second over all ranks, input_wait, …).</param>
public sealed record SupervisedProgress<TResult>(long Step, long TotalSteps, int Epoch, double Loss, double ImagesPerSecond, TResult? Evaluation,
    IReadOnlyDictionary<string, double> Figures) where TResult : class;

/// <summary>One step of a training loop: where it is and the numbers of its metrics line.</summary>
public sealed record TrainStepProgress(long Step, long TotalSteps, IReadOnlyDictionary<string, double> Figures);

/// <summary>What a supervised run (fine-tuning, linear probing, segmentation) did.</summary>
public sealed record SupervisedResult<TResult>(long Steps, double FirstLoss, double LastLoss, long SkippedSteps, double ImagesPerSecond,
    IReadOnlyList<EpochEvaluation<TResult>> Evaluations, string Checkpoint) where TResult : class
{
    /// <summary>The last epoch's evaluation, or null when none ran.</summary>
    public TResult? Final => Evaluations.Count == 0 ? null : Evaluations[^1].Result;

    /// <summary>A resumed run that had already finished: nothing trained, the figures are the saved run's.</summary>
    public bool WasComplete { get; init; }
}
