using System.Diagnostics;
using MimFlow.Core.Randomness;
using MimFlow.Models.Backbones;
using MimFlow.Training.Distributed;
using MimFlow.Training.Optimization;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Kernel;

/// <summary>
/// Work a trainer does around the update: a low-precision compute copy's weights pulled before the forward pass and
/// its gradients pushed to the masters after backward, iBOT's frozen last layer after backward and its EMA teacher
/// after the step. AfterBackward sees this process's own gradients, before they are summed across ranks.
/// </summary>
public sealed record StepHooks(Action? BeforeForward = null, Action? AfterBackward = null, Action? AfterStep = null);

/// <summary>What one step did: its loss, the gradient norm before clipping (NaN when not clipped or skipped), and
/// whether the weights moved (false for a non-finite loss). Under data parallelism the loss and the metrics are the
/// global batch's.</summary>
public readonly record struct StepOutcome(double Loss, double GradientNorm, bool Applied)
{
    /// <summary>The step's metrics (the forward's, as global means under data parallelism); null when none were given.</summary>
    public IReadOnlyDictionary<string, double>? Metrics { get; init; }
}

/// <summary>
/// This process's loss for its rows of the global batch: a mean over <paramref name="Items"/> items (images, masked
/// patches, valid pixels), with the metrics read from the same forward (each also a mean over those items).
/// </summary>
public sealed record LocalLoss(Tensor Mean, long Items, IReadOnlyDictionary<string, double>? Metrics = null);

/// <summary>
/// The optimisation step every trainer runs — pretraining, VQ-KD, fine-tuning, linear probing and segmentation:
/// stochastic depth drawn from a generator seeded by (seed, step), so a resumed run draws what the uninterrupted one
/// did; the loss; a non-finite loss skips the update (gradients cleared, the step counted by the caller's tracker);
/// otherwise backward, the hooks, clipping by global norm, AdamW at the step's rate, and cleared gradients.
/// <para>
/// Data parallelism (a collective of more than one rank): each rank computes its rows of the global batch, with the
/// drop-path draws of those rows in the single-process run. One host all-reduce sums (items, mean·items, metric·items)
/// so loss and metrics are the global batch's means (sums over counts, not means of means) and every rank takes the
/// same finite/skip decision; each rank back-propagates its mean × its items / the global items, so the all-reduced
/// sum of the flat gradient buffer (one collective per step, between backward and clipping) is the gradient of the
/// global mean; clipping and AdamW then run identically on every rank. One process runs exactly today's arithmetic.
/// </para>
/// </summary>
public sealed class TrainerKernel(FlatAdamW optimizer, ulong seed, Device device, double? clipGradient, ICollective? collective = null)
{
    private readonly ICollective collective = collective ?? SingleProcess.Instance;

    public FlatAdamW Optimizer => optimizer;

    public ICollective Collective => collective;

    /// <summary>Whether steps go through the collective: any engine but the single-process one, even with one rank (NCCL
    /// at world size 1 then repeats the single-process run bit for bit: every sum is of one term, every share 1).</summary>
    private bool Reduces => collective is not SingleProcess;

    /// <summary>Time spent in the gradient all-reduce so far (zero for one process).</summary>
    public TimeSpan ReduceTime { get; private set; }

    /// <param name="model">The module whose stochastic depth and dropout draw from the step's generator (the one <paramref name="forward"/> runs).</param>
    /// <param name="forward">The step's loss (a scalar, the mean over this process's rows); it runs under the caller's dispose scope.</param>
    /// <param name="rows">This process's rows of the global batch (null: all of it); a batch-mean loss counts them as its items.</param>
    public StepOutcome Step(long step, double learningRate, nn.Module model, Func<Tensor> forward, StepHooks? hooks = null, BatchSlice? rows = null) =>
        Step(step, learningRate, model, () => new LocalLoss(forward(), rows?.Count ?? 1), hooks, rows);

    public StepOutcome Step(long step, double learningRate, nn.Module model, Func<LocalLoss> forward, StepHooks? hooks = null, BatchSlice? rows = null)
    {
        var slice = rows ?? default;
        if (Reduces && rows is null)
            throw new InvalidOperationException($"a data-parallel step ({collective.WorldSize} ranks) needs this rank's rows of the global batch");
        using var generator = new Generator(StableRandom.For(seed, "drop-path", (ulong)step).NextUInt64(), device);
        StepRandomness.UseGenerator(model, generator, rows is null ? null : new BatchRows(slice.Offset, slice.Count, slice.Global));
        try
        {
            hooks?.BeforeForward?.Invoke();
            var local = forward();
            double value = local.Mean.item<float>();
            var metrics = local.Metrics;
            double share = 1;
            if (Reduces) (value, metrics, share) = GlobalMeans(value, local, step);
            if (!double.IsFinite(value))
            {
                optimizer.ZeroGrad();
                return new StepOutcome(value, double.NaN, Applied: false) { Metrics = metrics };
            }
            if (Reduces)
            {
                using var scaled = local.Mean * share;
                scaled.backward();
            }
            else local.Mean.backward();
            hooks?.AfterBackward?.Invoke();
            if (Reduces)
            {
                var clock = Stopwatch.StartNew();
                collective.AllReduceSum(optimizer.FlatGradients, $"gradients of step {step}");
                ReduceTime += clock.Elapsed;
            }
            double norm = clipGradient is double clip ? optimizer.ClipGradNorm(clip) : double.NaN;
            optimizer.Step(learningRate);
            optimizer.ZeroGrad();
            hooks?.AfterStep?.Invoke();
            return new StepOutcome(value, norm, Applied: true) { Metrics = metrics };
        }
        finally
        {
            StepRandomness.UseGenerator(model, null);
        }
    }

    /// <summary>(global mean loss, global mean metrics, this rank's share items/global items) from one host all-reduce.</summary>
    private (double Loss, IReadOnlyDictionary<string, double>? Metrics, double Share) GlobalMeans(double localMean, LocalLoss local, long step)
    {
        var names = local.Metrics?.Keys.Order(StringComparer.Ordinal).ToArray() ?? [];
        var sums = new double[2 + names.Length];
        sums[0] = local.Items;
        sums[1] = localMean * local.Items;
        for (int i = 0; i < names.Length; i++) sums[2 + i] = local.Metrics![names[i]] * local.Items;
        collective.AllReduceSum(sums, $"loss of step {step}");
        double items = sums[0];
        if (!(items > 0)) throw new InvalidOperationException($"step {step}: the global batch has no items to average the loss over");
        Dictionary<string, double>? metrics = null;
        if (local.Metrics is not null)
        {
            metrics = new Dictionary<string, double>(names.Length, StringComparer.Ordinal);
            foreach (var (name, value) in local.Metrics) metrics[name] = double.NaN;
            for (int i = 0; i < names.Length; i++) metrics[names[i]] = sums[2 + i] / items;
        }
        return (sums[1] / items, metrics, local.Items / items);
    }
}
