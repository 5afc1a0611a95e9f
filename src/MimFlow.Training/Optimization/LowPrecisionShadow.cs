using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MimFlow.Training.Optimization;

/// <summary>
/// bf16 compute with fp32 master weights, without autocast (TorchSharp has none): a second copy of the module in the
/// compute type whose trainable parameters and gradients are views of two flat buffers laid out exactly like the
/// optimiser's fp32 buffer. Before a step, one cast-copy pulls the masters in; after backward, one cast-copy pushes
/// the gradients to the optimiser, which clips and steps in fp32. Everything in the copy runs in the compute type,
/// LayerNorm and softmax included (autocast would keep those in fp32): the trade is stated, and the gradients are
/// checked against fp32 by <c>mimflow bench train</c>.
/// </summary>
public sealed class LowPrecisionShadow : IDisposable
{
    private readonly FlatAdamW master;
    private readonly Tensor flatParameters;
    private readonly Tensor flatGradients;
    private readonly (Parameter Parameter, long Offset, long Length, long[] Shape)[] members;

    /// <param name="shadow">A module of the same architecture and parameter names as the optimised one, on the same device.</param>
    public LowPrecisionShadow(nn.Module shadow, FlatAdamW master, ScalarType computeType = ScalarType.BFloat16)
    {
        this.master = master;
        ComputeType = computeType;
        Module = shadow;
        // Parameters and float buffers in the compute type first (integer buffers such as position indices stay).
        shadow.to(computeType);
        var byName = shadow.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        using var noGrad = no_grad();
        var device = master.FlatParameters.device;
        flatParameters = zeros(master.Length, dtype: computeType, device: device);
        flatGradients = zeros(master.Length, dtype: computeType, device: device);
        members = master.Layout.Select(segment => byName.TryGetValue(segment.Name, out var parameter)
            ? (parameter, segment.Offset, segment.Length, segment.Shape)
            : throw new ArgumentException($"the shadow has no parameter '{segment.Name}' of the optimised module")).ToArray();
        foreach (var (parameter, offset, length, shape) in members)
        {
            parameter.set_(flatParameters.narrow(0, offset, length).view(shape));
            parameter.grad = flatGradients.narrow(0, offset, length).view(shape);
        }
        PullWeights();
    }

    public nn.Module Module { get; }

    public ScalarType ComputeType { get; }

    /// <summary>Masters → compute copy, one kernel.</summary>
    public void PullWeights()
    {
        using var noGrad = no_grad();
        flatParameters.copy_(master.FlatParameters);
    }

    /// <summary>Compute-copy gradients → the optimiser's fp32 gradient buffer, one kernel; then clears them here.</summary>
    public void PushGradients()
    {
        using var noGrad = no_grad();
        master.FlatGradients.copy_(flatGradients);
        flatGradients.zero_();
        // Backward accumulates into the views; a gradient that was set to none (zero_grad) is re-attached.
        foreach (var (parameter, offset, length, shape) in members)
            if (parameter.grad is null) parameter.grad = flatGradients.narrow(0, offset, length).view(shape);
    }

    public void Dispose()
    {
        flatParameters.Dispose();
        flatGradients.Dispose();
    }
}
