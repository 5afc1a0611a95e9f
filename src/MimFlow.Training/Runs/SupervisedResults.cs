namespace MimFlow.Training.Runs;

/// <summary>One epoch's evaluation (the step is the number of steps taken by its end).</summary>
public sealed record EpochEvaluation<TResult>(int Epoch, long Step, TResult Result);

/// <summary>Reported after each step, and after each epoch with its evaluation.</summary>
public sealed record SupervisedProgress<TResult>(long Step, long TotalSteps, int Epoch, double Loss, double ImagesPerSecond, TResult? Evaluation) where TResult : class;

/// <summary>What a supervised run (fine-tuning, linear probing, segmentation) did.</summary>
public sealed record SupervisedResult<TResult>(long Steps, double FirstLoss, double LastLoss, long SkippedSteps, double ImagesPerSecond,
    IReadOnlyList<EpochEvaluation<TResult>> Evaluations, string Checkpoint) where TResult : class
{
    /// <summary>The last epoch's evaluation, or null when none ran.</summary>
    public TResult? Final => Evaluations.Count == 0 ? null : Evaluations[^1].Result;

    /// <summary>A resumed run that had already finished: nothing trained, the figures are the saved run's.</summary>
    public bool WasComplete { get; init; }
}
