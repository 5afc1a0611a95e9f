using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Backbones;

/// <summary>Patch embedding: a P×P convolution with stride P, flattened to [B, N, D]. Parameters: <c>proj.weight</c>, <c>proj.bias</c>.</summary>
public sealed class PatchEmbed : Module<Tensor, Tensor>
{
    [ComponentName(Name = "proj")] private readonly Conv2d projection;

    public PatchEmbed(VitConfig config) : base("PatchEmbed")
    {
        projection = Conv2d(config.InChannels, config.EmbedDim, config.PatchSize, stride: config.PatchSize, bias: !config.PreNorm);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixels) => projection.forward(pixels).flatten(2).transpose(1, 2);
}

/// <summary>Two linear layers with GELU (or CLIP's quick-GELU) between. Parameters: <c>fc1.*</c>, <c>fc2.*</c>.</summary>
public sealed class Mlp : Module<Tensor, Tensor>
{
    [ComponentName(Name = "fc1")] private readonly Linear first;
    [ComponentName(Name = "fc2")] private readonly Linear second;
    private readonly Activation activation;

    public Mlp(VitConfig config) : base("Mlp")
    {
        int hidden = (int)(config.EmbedDim * config.MlpRatio);
        first = Linear(config.EmbedDim, hidden);
        second = Linear(hidden, config.EmbedDim);
        activation = config.Activation;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var hidden = first.forward(x);
        using var activated = activation == Activation.QuickGelu ? hidden * functional.sigmoid(1.702 * hidden) : functional.gelu(hidden);
        return second.forward(activated);
    }
}

/// <summary>
/// Multi-head self-attention through <c>scaled_dot_product_attention</c>. BEiT variant: <c>q_bias</c> and
/// <c>v_bias</c> (no k bias) and, with relative position bias, <c>relative_position_bias_table</c> added to the
/// logits as an additive mask; ViT variant: <c>qkv.bias</c>. Shared parameters: <c>qkv.weight</c>, <c>proj.*</c>.
/// </summary>
public sealed class Attention : Module<Tensor, Tensor?, Tensor>
{
    [ComponentName(Name = "qkv")] private readonly Linear qkv;
    [ComponentName(Name = "q_bias")] private readonly Parameter? queryBias;
    [ComponentName(Name = "v_bias")] private readonly Parameter? valueBias;
    [ComponentName(Name = "relative_position_bias_table")] private readonly Parameter? relativeTable;
    [ComponentName(Name = "relative_position_index")] private readonly Tensor? relativeIndex;
    [ComponentName(Name = "proj")] private readonly Linear projection;
    private readonly int heads;

    public Attention(VitConfig config) : base("Attention")
    {
        heads = config.NumHeads;
        bool beit = config.BeitAttention;
        qkv = Linear(config.EmbedDim, 3 * config.EmbedDim, hasBias: !beit && config.QkvBias);
        if (beit && config.QkvBias)
        {
            queryBias = Parameter(zeros(config.EmbedDim));
            valueBias = Parameter(zeros(config.EmbedDim));
        }
        if (config.UseRelPosBias)
        {
            relativeTable = Parameter(zeros(RelativePositionBias.TableSize(config.GridSize, config.GridSize), heads));
            relativeIndex = RelativePositionBias.Index(config.GridSize, config.GridSize);
            register_buffer("relative_position_index", relativeIndex, persistent: false);
        }
        projection = Linear(config.EmbedDim, config.EmbedDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? sharedBias)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], dim = x.shape[2];
        Tensor projected = queryBias is not null
            ? functional.linear(x, qkv.weight!, cat([queryBias, zeros_like(valueBias!), valueBias!]))
            : qkv.forward(x);
        var split = projected.reshape(batch, tokens, 3, heads, dim / heads).permute(2, 0, 3, 1, 4);
        Tensor? bias = relativeTable is not null ? RelativePositionBias.Gather(relativeTable, relativeIndex!) : null;
        if (sharedBias is not null) bias = bias is null ? sharedBias : bias + sharedBias;
        var attended = functional.scaled_dot_product_attention(split[0], split[1], split[2], bias?.to(x.dtype));
        var merged = attended.transpose(1, 2).reshape(batch, tokens, dim);
        return projection.forward(merged).MoveToOuterDisposeScope();
    }
}

/// <summary>timm's ViT LayerScale: a learnable per-channel scale of a residual branch. Parameter: <c>gamma</c>.</summary>
public sealed class LayerScale : Module<Tensor, Tensor>
{
    [ComponentName(Name = "gamma")] private readonly Parameter gamma;

    public LayerScale(int dim, double init) : base("LayerScale")
    {
        gamma = Parameter(full(dim, init));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => x * gamma;
}
