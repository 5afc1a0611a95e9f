using MimFlow.Core.Randomness;
using MimFlow.Models.Backbones;
using MimFlow.Training.Optimization;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Kernel;

/// <summary>
/// Work a trainer does around the update: a low-precision compute copy's weights pulled before the forward pass and
/// its gradients pushed to the masters after backward, iBOT's frozen last layer after backward and its EMA teacher
/// after the step.
/// </summary>
public sealed record StepHooks(Action? BeforeForward = null, Action? AfterBackward = null, Action? AfterStep = null);

/// <summary>What one step did: its loss, the gradient norm before clipping (NaN when not clipped or skipped), and
/// whether the weights moved (false for a non-finite loss).</summary>
public readonly record struct StepOutcome(double Loss, double GradientNorm, bool Applied);

/// <summary>
/// The optimisation step every trainer runs — pretraining, VQ-KD, fine-tuning, linear probing and segmentation:
/// stochastic depth drawn from a generator seeded by (seed, step), so a resumed run draws what the uninterrupted one
/// did; the loss; a non-finite loss skips the update (gradients cleared, the step counted by the caller's tracker);
/// otherwise backward, the hooks, clipping by global norm, AdamW at the step's rate, and cleared gradients.
/// Distributed training reduces the gradients here, between backward and clipping.
/// </summary>
public sealed class TrainerKernel(FlatAdamW optimizer, ulong seed, Device device, double? clipGradient)
{
    public FlatAdamW Optimizer => optimizer;

    /// <param name="model">The module whose drop-path blocks draw from the step's generator (the one <paramref name="forward"/> runs).</param>
    /// <param name="forward">The step's loss (a scalar); it runs under the caller's dispose scope.</param>
    public StepOutcome Step(long step, double learningRate, nn.Module model, Func<Tensor> forward, StepHooks? hooks = null)
    {
        using var generator = new Generator(StableRandom.For(seed, "drop-path", (ulong)step).NextUInt64(), device);
        Block.UseGenerator(model, generator);
        try
        {
            hooks?.BeforeForward?.Invoke();
            var loss = forward();
            double value = loss.item<float>();
            if (!double.IsFinite(value))
            {
                optimizer.ZeroGrad();
                return new StepOutcome(value, double.NaN, Applied: false);
            }
            loss.backward();
            hooks?.AfterBackward?.Invoke();
            double norm = clipGradient is double clip ? optimizer.ClipGradNorm(clip) : double.NaN;
            optimizer.Step(learningRate);
            optimizer.ZeroGrad();
            hooks?.AfterStep?.Invoke();
            return new StepOutcome(value, norm, Applied: true);
        }
        finally
        {
            Block.UseGenerator(model, null);
        }
    }
}
