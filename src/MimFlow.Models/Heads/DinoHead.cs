using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Heads;

/// <summary>
/// The iBOT / DINO projection head, shared between [CLS] and patch tokens: a 3-layer MLP (<c>mlp.0</c>, <c>mlp.2</c>,
/// <c>mlp.4</c>; hidden 2048, GELU, bottleneck 256), l2 normalisation, then a weight-normalised linear layer without
/// bias to K = 8192 prototypes (<c>last_layer.weight_g</c>, <c>last_layer.weight_v</c>; the gain stays 1 when
/// <paramref name="normLastLayer"/>, as DINO's norm_last_layer).
/// </summary>
public sealed class DinoHead : Module<Tensor, Tensor>
{
    [ComponentName(Name = "mlp")] private readonly Sequential mlp;
    [ComponentName(Name = "last_layer")] private readonly WeightNormLinear lastLayer;

    public DinoHead(int inputDim, int outputs = 8192, int hidden = 2048, int bottleneck = 256, bool normLastLayer = true) : base("DinoHead")
    {
        mlp = Sequential(("0", Linear(inputDim, hidden)), ("1", GELU()), ("2", Linear(hidden, hidden)), ("3", GELU()), ("4", Linear(hidden, bottleneck)));
        lastLayer = new WeightNormLinear(bottleneck, outputs, trainableGain: !normLastLayer);
        RegisterComponents();
    }

    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var projected = functional.normalize(mlp.forward(tokens), p: 2, dim: -1);
        return lastLayer.forward(projected).MoveToOuterDisposeScope();
    }

    /// <summary>weight = g · v / ‖v‖ per output row (PyTorch's weight_norm with dim 0).</summary>
    public sealed class WeightNormLinear : Module<Tensor, Tensor>
    {
        [ComponentName(Name = "weight_g")] private readonly Parameter gain;
        [ComponentName(Name = "weight_v")] private readonly Parameter direction;

        public WeightNormLinear(int inputs, int outputs, bool trainableGain) : base("WeightNormLinear")
        {
            direction = Parameter(randn(outputs, inputs) * 0.02);
            gain = Parameter(ones(outputs, 1), requires_grad: trainableGain);
            RegisterComponents();
        }

        public Tensor Weight() => gain * direction / direction.norm(1, keepdim: true);

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            return functional.linear(x, Weight()).MoveToOuterDisposeScope();
        }
    }
}
