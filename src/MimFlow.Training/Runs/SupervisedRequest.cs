using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>
/// What every supervised run (fine-tuning, linear probing, segmentation) is asked: where the model and data are, where
/// the run goes, and the settings whose defaults the tasks share; each task's record adds its recipe.
/// </summary>
public abstract record SupervisedRequest
{
    /// <summary>A ViT model directory (a pretraining run folder or checkpoint <c>backbone/</c>, an imported model) or an architecture name (random init).</summary>
    public required string Model { get; init; }

    /// <summary>A labelled dataset: its train split to learn from, its val split to evaluate.</summary>
    public required string Data { get; init; }

    public required string OutputDirectory { get; init; }

    public ulong Seed { get; init; }
    public Device? Device { get; init; }
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>Peak learning rate as given; null: the task's recipe scaled linearly to its batch size.</summary>
    public double? LearningRate { get; init; }

    /// <summary>Layer-wise learning-rate decay (BEiT-base: 0.65, large: 0.75); the head keeps the full rate; 1 turns it off.</summary>
    public double LayerDecay { get; init; } = 0.65;

    /// <summary>Stochastic depth of the last block, linear in depth from 0 (BEiT-base: 0.1).</summary>
    public double DropPath { get; init; } = 0.1;

    /// <summary>Gradient clipping by global norm; null: none (BEiT's fine-tuning and ADE20K defaults).</summary>
    public double? ClipGradient { get; init; }

    /// <summary>Evaluate on the validation split after each epoch; off: train only.</summary>
    public bool EvaluateEachEpoch { get; init; } = true;

    /// <summary>Images per evaluation batch; null: the task's.</summary>
    public int? EvalBatchSize { get; init; }

    /// <summary>Consecutive non-finite losses tolerated (each step skipped) before the run stops.</summary>
    public int MaxConsecutiveNonFinite { get; init; } = 5;

    /// <summary>Continue the run in <see cref="OutputDirectory"/> from its latest checkpoint (one per epoch), given the same
    /// request; off: a folder with a checkpoint is refused.</summary>
    public bool Resume { get; init; }

    /// <summary>The shared settings' bounds; each task checks its own besides.</summary>
    protected void ValidateShared()
    {
        if (DecodeWorkers < 1) throw new ArgumentException("decode workers must be at least 1");
        if (LearningRate is <= 0) throw new ArgumentException($"the learning rate must be positive (got {LearningRate})");
        if (LayerDecay is <= 0 or > 1) throw new ArgumentException($"layer decay must lie in (0, 1] (got {LayerDecay})");
        if (DropPath is < 0 or >= 1) throw new ArgumentException($"drop path must lie in [0, 1) (got {DropPath})");
        if (ClipGradient is <= 0) throw new ArgumentException($"the gradient clipping norm must be positive (got {ClipGradient})");
        if (EvalBatchSize is < 1) throw new ArgumentException("the evaluation batch must be positive");
    }
}
