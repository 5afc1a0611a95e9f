using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Models.Backbones;

/// <summary>
/// A module whose training-time draws (stochastic depth, dropout) come from a generator the trainer hands it for each
/// step, so that a run is a function of its seed: the same seed repeats every loss, and a resumed run draws what the
/// uninterrupted one drew. Torch's global generator cannot give that: it is shared by the whole process.
/// </summary>
public interface IStepRandomness
{
    /// <param name="generator">The step's generator (null: torch's global one, as outside a trainer).</param>
    /// <param name="rows">This process's rows of the global batch, or null when it computes the whole batch.</param>
    void UseGenerator(Generator? generator, BatchRows? rows);
}

/// <summary>Rows [Offset, Offset + Count) of a global batch of <see cref="Global"/> images: what one data-parallel process computes.</summary>
public sealed record BatchRows(int Offset, int Count, int Global)
{
    public bool IsWhole => Offset == 0 && Count == Global;
}

public static class StepRandomness
{
    /// <summary>
    /// Makes every <see cref="IStepRandomness"/> module under <paramref name="root"/> draw from <paramref name="generator"/>
    /// (null: torch's global generator). A trainer passes a generator seeded by (seed, step).
    /// </summary>
    /// <param name="rows">Data-parallel training: this process computes only some rows of the global batch; the draws
    /// are then made for the whole global batch and this process keeps its rows, so every image is dropped exactly as
    /// in the single-process run. Null: the batch is the whole batch.</param>
    public static void UseGenerator(nn.Module root, Generator? generator, BatchRows? rows = null)
    {
        var kept = rows is { IsWhole: false } ? rows : null;
        // TorchSharp's named_modules() leaves out the root itself.
        foreach (var module in root.named_modules().Select(named => named.module).Prepend(root))
            if (module is IStepRandomness random) random.UseGenerator(generator, kept);
    }

    /// <summary>
    /// Bernoulli(<paramref name="keep"/>) survivors of <paramref name="shape"/> (dimension 0: this process's rows), 1 or 0,
    /// drawn from <paramref name="generator"/>. With <paramref name="rows"/> the draws cover the whole global batch and
    /// this process keeps its rows: a forward may stack k views of the same images (view-major, as multi-crop
    /// objectives do), so there are k draws per global image, of which this process keeps its rows in each view.
    /// </summary>
    public static Tensor Survivors(long[] shape, double keep, ScalarType dtype, Device device, Generator? generator, BatchRows? rows)
    {
        if (rows is null) return empty(shape, dtype: dtype, device: device).bernoulli_(keep, generator: generator);
        if (shape[0] % rows.Count != 0)
            throw new InvalidOperationException($"a batch of {shape[0]} rows is not a stack of this process's {rows.Count} images of the global batch");
        long views = shape[0] / rows.Count;
        using var scope = NewDisposeScope();
        long[] global = [views, rows.Global, .. shape[1..]];
        var drawn = empty(global, dtype: dtype, device: device).bernoulli_(keep, generator: generator);
        return drawn.narrow(1, rows.Offset, rows.Count).reshape(shape).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Element-wise dropout (zero with probability p while training, survivors scaled by 1/(1 − p)), as <c>nn.Dropout</c>,
/// but drawing from the step's generator (<see cref="IStepRandomness"/>). It has no parameters: a checkpoint is the
/// same as with <c>nn.Dropout</c>.
/// </summary>
public sealed class SeededDropout : nn.Module<Tensor, Tensor>, IStepRandomness
{
    private readonly double probability;
    private Generator? generator;
    private BatchRows? rows;

    public SeededDropout(double probability) : base("Dropout")
    {
        if (probability is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(probability), probability, "dropout must be in [0, 1)");
        this.probability = probability;
    }

    public void UseGenerator(Generator? generator, BatchRows? rows)
    {
        this.generator = generator;
        this.rows = rows;
    }

    public override Tensor forward(Tensor x)
    {
        if (!training || probability == 0) return x.alias();
        double keep = 1 - probability;
        using var survivors = StepRandomness.Survivors(x.shape, keep, x.dtype, x.device, generator, rows);
        return x * survivors / keep;
    }
}
