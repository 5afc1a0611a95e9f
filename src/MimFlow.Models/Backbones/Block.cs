using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Backbones;

/// <summary>
/// A pre-norm Transformer block: x + γ₁·attn(norm1(x)), then x + γ₂·mlp(norm2(x)), with stochastic depth on both
/// residual branches while training, drawn from the step's generator (<see cref="IStepRandomness"/>). LayerScale
/// parameters are <c>gamma_1</c>/<c>gamma_2</c> in BEiT models (timm's <c>Beit</c>) and <c>ls1.gamma</c>/<c>ls2.gamma</c>
/// in plain ViTs (timm's <c>VisionTransformer</c>).
/// </summary>
public sealed class Block : Module<Tensor, Tensor?, Tensor>, IStepRandomness
{
    [ComponentName(Name = "norm1")] private readonly LayerNorm norm1;
    [ComponentName(Name = "attn")] private readonly Attention attention;
    [ComponentName(Name = "norm2")] private readonly LayerNorm norm2;
    [ComponentName(Name = "mlp")] private readonly Mlp mlp;
    [ComponentName(Name = "gamma_1")] private readonly Parameter? gamma1;
    [ComponentName(Name = "gamma_2")] private readonly Parameter? gamma2;
    [ComponentName(Name = "ls1")] private readonly LayerScale? layerScale1;
    [ComponentName(Name = "ls2")] private readonly LayerScale? layerScale2;
    private readonly double dropPath;
    private Generator? dropPathGenerator;
    private BatchRows? dropPathRows;

    public Block(VitConfig config, double dropPath) : base("Block")
    {
        norm1 = LayerNorm(config.EmbedDim, config.LayerNormEps);
        attention = new Attention(config);
        norm2 = LayerNorm(config.EmbedDim, config.LayerNormEps);
        mlp = new Mlp(config);
        if (config.InitValues is double init && config.BeitAttention)
        {
            gamma1 = Parameter(full(config.EmbedDim, init));
            gamma2 = Parameter(full(config.EmbedDim, init));
        }
        else if (config.InitValues is double vitInit)
        {
            layerScale1 = new LayerScale(config.EmbedDim, vitInit);
            layerScale2 = new LayerScale(config.EmbedDim, vitInit);
        }
        this.dropPath = dropPath;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? sharedBias)
    {
        using var scope = NewDisposeScope();
        var attended = attention.forward(norm1.forward(x), sharedBias);
        if (gamma1 is not null) attended = attended * gamma1;
        if (layerScale1 is not null) attended = layerScale1.forward(attended);
        x = x + DropPath(attended);
        var fed = mlp.forward(norm2.forward(x));
        if (gamma2 is not null) fed = fed * gamma2;
        if (layerScale2 is not null) fed = layerScale2.forward(fed);
        return (x + DropPath(fed)).MoveToOuterDisposeScope();
    }

    void IStepRandomness.UseGenerator(Generator? generator, BatchRows? rows)
    {
        dropPathGenerator = generator;
        dropPathRows = rows;
    }

    /// <summary>Stochastic depth: drop the whole branch per sample with probability p, scaling survivors by 1/(1 − p).</summary>
    private Tensor DropPath(Tensor branch)
    {
        if (!training || dropPath <= 0) return branch;
        double keep = 1 - dropPath;
        var shape = new long[branch.dim()];
        Array.Fill(shape, 1L);
        shape[0] = branch.shape[0];
        using var survivors = StepRandomness.Survivors(shape, keep, branch.dtype, branch.device, dropPathGenerator, dropPathRows);
        return branch * survivors / keep;
    }
}
