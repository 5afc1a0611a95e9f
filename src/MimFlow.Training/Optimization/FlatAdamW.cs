using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MimFlow.Training.Optimization;

/// <summary>AdamW's hyper-parameters other than the (scheduled) learning rate. Defaults: BEiT's pretraining recipe.</summary>
public sealed record AdamWOptions
{
    public double Beta1 { get; init; } = 0.9;

    /// <summary>BEiT pretrains with 0.999, BEiT v2 / iBOT with 0.98 or 0.999; fine-tuning uses 0.999.</summary>
    public double Beta2 { get; init; } = 0.999;

    public double Eps { get; init; } = 1e-8;

    /// <summary>Weight decay of the decaying groups when <see cref="FlatAdamW.Step"/> is not given a scheduled value.</summary>
    public double WeightDecay { get; init; } = 0.05;

    public void Validate()
    {
        if (Beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "β1 must lie in [0, 1).");
        if (Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "β2 must lie in [0, 1).");
        if (!(Eps >= 0)) throw new ArgumentOutOfRangeException(nameof(Eps), Eps, "ε must not be negative.");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "weight decay must not be negative.");
    }
}

/// <summary>Where one parameter lives in the flat buffers (elements, not bytes).</summary>
public sealed record FlatSegment(string Name, string Group, long Offset, long Length, long[] Shape);

/// <summary>
/// AdamW (decoupled weight decay, bias-corrected moments; torch's <c>AdamW</c> arithmetic) over one flat fp32 buffer
/// per quantity — parameters, gradients, first and second moments — so a step is about ten whole-buffer kernels
/// however many tensors the model has, instead of ten per tensor. Groups are laid out contiguously; where their
/// learning rates (layer decay) or decay factors differ, a step fills a temporary buffer with each group's scalar (one
/// fill per group) rather than keeping per-element masks, which costs no memory between steps and gives each element
/// exactly the float torch would use for its group: without clipping, the result is bit-equal to torch's AdamW.
/// <para>
/// The module's parameters are re-pointed (<c>set_</c>) at views of the flat parameter buffer, so the model reads and
/// the optimiser writes the same memory; each parameter's <c>.grad</c> is set to a view of the flat gradient buffer,
/// which autograd accumulates into in place. A gradient that was replaced behind the optimiser's back (a module's
/// <c>zero_grad(set_to_none)</c>, a gradient assigned by hand) is copied in and the view re-attached before use and
/// counted in <see cref="ForeignGradientCopies"/>. Build the optimiser after the model has reached its device:
/// <c>Module.to</c> replaces parameters and so cuts them loose from the buffer; loading weights (copy_) does not.
/// </para>
/// <para>
/// Unlike torch, whose AdamW skips a parameter whose gradient is None, every parameter here takes part in every step
/// with a zero gradient if it got none; for a parameter that never receives gradients (an unused mask token) the
/// result is the same (moments stay zero, so the update is zero), save for weight decay, which BEiT's grouping turns
/// off for such tokens anyway.
/// </para>
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    /// <summary>Elements per partial sum in <see cref="GradNorm"/>.</summary>
    private const long NormRow = 4096;

    private readonly Parameter[] parameters;
    private readonly Tensor flatParameters;
    private readonly Tensor flatGradients;
    private readonly Tensor expAvg;
    private readonly Tensor expAvgSq;
    private readonly (long Offset, long Length)[] groupSpans;
    private readonly IntPtr gradientStorage;
    private bool disposed;

    public FlatAdamW(IEnumerable<ParameterGroup> groups, AdamWOptions options)
    {
        options.Validate();
        Options = options;
        Groups = groups.ToList();
        var members = Groups.SelectMany(g => g.Parameters.Select(p => (Group: g, p.Name, p.Parameter))).ToList();
        if (members.Count == 0) throw new ArgumentException("no parameters to optimise.", nameof(groups));
        var seen = new HashSet<IntPtr>();
        foreach (var member in members)
        {
            if (!seen.Add(member.Parameter.Handle)) throw new ArgumentException($"parameter '{member.Name}' is in more than one group.", nameof(groups));
            if (member.Parameter.dtype != ScalarType.Float32)
                throw new NotSupportedException($"parameter '{member.Name}' is {member.Parameter.dtype}; the flat buffer holds float32 master weights only.");
        }
        var device = members[0].Parameter.device;
        foreach (var member in members)
            if (member.Parameter.device.type != device.type || member.Parameter.device.index != device.index)
                throw new ArgumentException($"parameter '{member.Name}' is on {member.Parameter.device}, not {device} as '{members[0].Name}'.", nameof(groups));

        var layout = new List<FlatSegment>(members.Count);
        long offset = 0;
        foreach (var (group, name, parameter) in members)
        {
            layout.Add(new FlatSegment(name, group.Name, offset, parameter.numel(), parameter.shape));
            offset += parameter.numel();
        }
        if (offset == 0) throw new ArgumentException("the parameters hold no elements.", nameof(groups));
        Layout = layout;
        Length = offset;
        LayoutDigest = Digest(layout);
        parameters = members.Select(m => m.Parameter).ToArray();

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        flatParameters = zeros(Length, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        flatGradients = zeros(Length, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        expAvg = zeros(Length, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        expAvgSq = zeros(Length, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        using (var storage = flatGradients.storage<float>()) gradientStorage = storage.data_ptr();

        groupSpans = new (long, long)[Groups.Count];
        for (int g = 0, first = 0; g < Groups.Count; first += Groups[g].Parameters.Count, g++)
        {
            int count = Groups[g].Parameters.Count;
            groupSpans[g] = count == 0 ? (0, 0) : (layout[first].Offset, layout[first + count - 1].Offset + layout[first + count - 1].Length - layout[first].Offset);
        }
        for (int i = 0; i < parameters.Length; i++)
        {
            var view = ParameterView(i);
            view.copy_(parameters[i]);
            parameters[i].set_(view);
            using (var existing = parameters[i].grad)
                if (existing is not null) GradientView(i).copy_(existing);
            parameters[i].grad = GradientView(i);
        }
    }

    public AdamWOptions Options { get; }

    public IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>Parameters in buffer order (groups in order, then their parameters).</summary>
    public IReadOnlyList<FlatSegment> Layout { get; }

    /// <summary>Elements in each flat buffer.</summary>
    public long Length { get; }

    /// <summary>SHA-256 of the layout's names and shapes: store it beside the state so a resume into another model fails loudly.</summary>
    public string LayoutDigest { get; }

    /// <summary>Steps taken; the bias correction's t, and what a schedule should be indexed with.</summary>
    public long StepCount { get; private set; }

    /// <summary>Parameter gradients that were not views of the flat buffer and had to be copied in (0 in the intended use).</summary>
    public long ForeignGradientCopies { get; private set; }

    /// <summary>The live flat parameter buffer (the module's parameters are views of it); the optimiser owns it.</summary>
    public Tensor FlatParameters => flatParameters;

    /// <summary>The live flat gradient buffer (the parameters' <c>.grad</c> are views of it); the optimiser owns it.</summary>
    public Tensor FlatGradients => flatGradients;

    /// <summary>Zeros the flat gradient buffer in one kernel and re-attaches any gradient view that was replaced.</summary>
    public void ZeroGrad()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        flatGradients.zero_();
        AttachGradients(keepValues: false);
    }

    /// <summary>
    /// The L2 norm of all gradients, on the flat buffer: norms of rows of <see cref="NormRow"/> elements (parallel over
    /// rows, each short enough for a float32 sum to stay within about 1e-7), combined in float64. One whole-buffer
    /// reduction would run on one thread and lose accuracy with the length of a large model's buffer.
    /// </summary>
    public double GradNorm()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        AttachGradients(keepValues: true);
        long rows = Length / NormRow, rest = Length % NormRow;
        double sumOfSquares = 0;
        if (rows > 0)
        {
            var rowNorms = flatGradients.narrow(0, 0, rows * NormRow).view(rows, NormRow).norm(dim: 1).to(ScalarType.Float64);
            sumOfSquares += rowNorms.square().sum().item<double>();
        }
        if (rest > 0) sumOfSquares += Math.Pow(flatGradients.narrow(0, rows * NormRow, rest).norm().item<float>(), 2);
        return Math.Sqrt(sumOfSquares);
    }

    /// <summary>
    /// torch's <c>clip_grad_norm_</c> on the flat buffer: gradients scaled by maxNorm / (norm + 1e-6) when that is below
    /// one. Returns the norm before clipping. A non-finite norm leaves the gradients as they are (torch would turn an
    /// infinite one into NaNs), so the caller can see it and skip the step.
    /// </summary>
    public double ClipGradNorm(double maxNorm)
    {
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the clipping norm must be positive.");
        double total = GradNorm();
        double coefficient = maxNorm / (total + 1e-6);
        if (double.IsFinite(total) && coefficient < 1)
        {
            using var noGrad = no_grad();
            flatGradients.mul_(coefficient);
        }
        return total;
    }

    /// <summary>
    /// One AdamW step at learning rate <paramref name="lr"/> (times each group's layer-decay scale) and weight decay
    /// <paramref name="weightDecay"/> (default <see cref="AdamWOptions.WeightDecay"/>) on the decaying groups, in
    /// torch's order: p ← p·(1 − lr·wd); m, v updated; p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
    /// </summary>
    public void Step(double lr, double? weightDecay = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!(lr >= 0)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "the learning rate must not be negative.");
        double decay = weightDecay ?? Options.WeightDecay;
        if (!(decay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), decay, "weight decay must not be negative.");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        AttachGradients(keepValues: true);
        StepCount++;
        double beta1 = Options.Beta1, beta2 = Options.Beta2;
        double correction1 = 1 - Math.Pow(beta1, StepCount);
        double correction2 = 1 - Math.Pow(beta2, StepCount);

        // Per-group scalars in torch's double arithmetic (lr·scale, 1 − lr·wd, −lr/(1 − β1ᵗ)), so each element sees the
        // very float torch's AdamW would use for its group and the result is bit-equal to it.
        double[] groupLr = Groups.Select(g => lr * g.LrScale).ToArray();
        double[] factors = Groups.Select((g, i) => g.AppliesWeightDecay ? 1 - groupLr[i] * decay : 1.0).ToArray();
        if (PerGroup(factors, out double sharedFactor) is { } factor) flatParameters.mul_(factor);
        else if (sharedFactor != 1.0) flatParameters.mul_(sharedFactor);
        expAvg.mul_(beta1).add_(flatGradients, alpha: 1 - beta1);
        expAvgSq.mul_(beta2).addcmul_(flatGradients, flatGradients, value: 1 - beta2);
        var denominator = expAvgSq.sqrt().div_(Math.Sqrt(correction2)).add_(Options.Eps);
        double[] stepSizes = groupLr.Select(groupRate => -(groupRate / correction1)).ToArray();
        if (PerGroup(stepSizes, out double sharedStepSize) is { } stepSize) flatParameters.addcdiv_(stepSize.mul_(expAvg), denominator, value: 1);
        else flatParameters.addcdiv_(expAvg, denominator, value: sharedStepSize);
    }

    /// <summary>
    /// The state an exact resume needs: <c>exp_avg</c> and <c>exp_avg_sq</c> ([Length] float32, in <see cref="Layout"/>
    /// order) and <c>step</c> (int64 scalar). Aliases of the live buffers, for the caller to write out and dispose before
    /// the next step; not copies, so a checkpoint of a large model does not double its optimiser memory.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateTensors()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            ["exp_avg"] = expAvg.alias(),
            ["exp_avg_sq"] = expAvgSq.alias(),
            ["step"] = tensor(StepCount, dtype: ScalarType.Int64),
        };
    }

    /// <summary>Restores <see cref="StateTensors"/>' tensors (any float dtype or device; lengths must match the layout).</summary>
    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        foreach (string name in new[] { "exp_avg", "exp_avg_sq", "step" })
            if (!state.ContainsKey(name)) throw new InvalidDataException($"optimiser state lacks '{name}'.");
        foreach (string name in new[] { "exp_avg", "exp_avg_sq" })
            if (state[name].numel() != Length)
                throw new InvalidDataException($"optimiser state '{name}' has {state[name].numel()} elements; this optimiser's layout has {Length}.");
        if (state["step"].numel() != 1) throw new InvalidDataException("optimiser state 'step' must hold one value.");
        long step = state["step"].to(ScalarType.Int64).item<long>();
        if (step < 0) throw new InvalidDataException($"optimiser state 'step' is negative ({step}).");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        expAvg.copy_(state["exp_avg"].reshape(Length));
        expAvgSq.copy_(state["exp_avg_sq"].reshape(Length));
        StepCount = step;
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        // The module's parameters and gradients keep the flat storages alive through their own references.
        flatParameters.Dispose();
        flatGradients.Dispose();
        expAvg.Dispose();
        expAvgSq.Dispose();
    }

    /// <summary>
    /// A temporary [Length] buffer holding each group's value over its span (one fill per group, whatever the number
    /// of parameters); null when all non-empty groups share one value, <paramref name="shared"/>, and a scalar operand does.
    /// </summary>
    private Tensor? PerGroup(double[] values, out double shared)
    {
        var present = Enumerable.Range(0, values.Length).Where(g => groupSpans[g].Length > 0).Select(g => values[g]).ToList();
        shared = present[0];
        if (present.All(v => v == present[0])) return null;
        var buffer = empty(Length, dtype: ScalarType.Float32, device: flatParameters.device);
        for (int g = 0; g < values.Length; g++)
            if (groupSpans[g].Length > 0) buffer.narrow(0, groupSpans[g].Offset, groupSpans[g].Length).fill_(values[g]);
        return buffer;
    }

    private Tensor ParameterView(int index) => View(flatParameters, index);

    private Tensor GradientView(int index) => View(flatGradients, index);

    private Tensor View(Tensor flat, int index) => flat.narrow(0, Layout[index].Offset, Layout[index].Length).view(Layout[index].Shape);

    /// <summary>
    /// Makes every parameter's gradient the view of its flat segment again. keepValues: a replaced gradient's values are
    /// copied in, a missing one reads as zero (it got no gradient since the last zeroing); otherwise the buffer is fresh.
    /// </summary>
    private void AttachGradients(bool keepValues)
    {
        for (int i = 0; i < parameters.Length; i++)
        {
            using var scope = NewDisposeScope();
            var gradient = parameters[i].grad;
            if (gradient is not null && IsFlatView(gradient, Layout[i])) continue;
            var view = GradientView(i);
            if (keepValues)
            {
                if (gradient is null) view.zero_();
                else
                {
                    view.copy_(gradient);
                    ForeignGradientCopies++;
                }
            }
            parameters[i].grad = view;
        }
    }

    private bool IsFlatView(Tensor gradient, FlatSegment segment)
    {
        if (gradient.dtype != ScalarType.Float32 || gradient.storage_offset() != segment.Offset || !gradient.shape.SequenceEqual(segment.Shape) || !gradient.is_contiguous())
            return false;
        using var storage = gradient.storage<float>();
        return storage.data_ptr() == gradientStorage;
    }

    private static string Digest(IEnumerable<FlatSegment> layout)
    {
        var text = new StringBuilder();
        foreach (var segment in layout)
            text.Append(segment.Name).Append(':').Append(string.Join('x', segment.Shape.Select(s => s.ToString(CultureInfo.InvariantCulture)))).Append(';');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }
}
