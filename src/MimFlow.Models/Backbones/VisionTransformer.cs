using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Backbones;

/// <summary>The shared relative position bias of BEiT (one table for all blocks): parameter <c>relative_position_bias_table</c>.</summary>
public sealed class SharedRelativePositionBias : Module
{
    [ComponentName(Name = "relative_position_bias_table")] private readonly Parameter table;
    [ComponentName(Name = "relative_position_index")] private readonly Tensor index;

    public SharedRelativePositionBias(VitConfig config) : base("RelativePositionBias")
    {
        table = Parameter(zeros(RelativePositionBias.TableSize(config.GridSize, config.GridSize), config.NumHeads));
        index = RelativePositionBias.Index(config.GridSize, config.GridSize);
        register_buffer("relative_position_index", index, persistent: false);
        RegisterComponents();
    }

    public Tensor Bias() => RelativePositionBias.Gather(table, index);
}

/// <summary>
/// A Vision Transformer of the BEiT family with timm's parameter names (so timm state dicts load strictly):
/// <c>patch_embed.proj.*</c>, <c>cls_token</c>, <c>pos_embed</c>, <c>rel_pos_bias.*</c>, <c>norm_pre.*</c>,
/// <c>blocks.{i}.*</c>, <c>norm.*</c> ("token" pooling) or <c>fc_norm.*</c> ("avg" pooling), <c>head.*</c>, and
/// <c>mask_token</c> for masked image modeling. <see cref="module.forward"/> returns timm's forward_features.
/// </summary>
public sealed class VisionTransformer : Module<Tensor, Tensor>
{
    [ComponentName(Name = "patch_embed")] private readonly PatchEmbed patchEmbed;
    [ComponentName(Name = "cls_token")] private readonly Parameter classToken;
    [ComponentName(Name = "mask_token")] private readonly Parameter? maskToken;
    [ComponentName(Name = "pos_embed")] private readonly Parameter? positionEmbedding;
    [ComponentName(Name = "rel_pos_bias")] private readonly SharedRelativePositionBias? sharedBias;
    [ComponentName(Name = "norm_pre")] private readonly LayerNorm? preNorm;
    [ComponentName(Name = "blocks")] private readonly ModuleList<Block> blocks;
    [ComponentName(Name = "norm")] private readonly LayerNorm? norm;
    [ComponentName(Name = "fc_norm")] private readonly LayerNorm? fcNorm;
    [ComponentName(Name = "head")] private readonly Linear? head;

    public VisionTransformer(VitConfig config) : base("VisionTransformer")
    {
        config.Validate();
        Config = config;
        patchEmbed = new PatchEmbed(config);
        classToken = Parameter(zeros(1, 1, config.EmbedDim));
        if (config.UseMaskToken) maskToken = Parameter(zeros(1, 1, config.EmbedDim));
        if (config.UseAbsPosEmb) positionEmbedding = Parameter(zeros(1, config.NumPatches + 1, config.EmbedDim));
        if (config.UseSharedRelPosBias) sharedBias = new SharedRelativePositionBias(config);
        if (config.PreNorm) preNorm = LayerNorm(config.EmbedDim, config.LayerNormEps);
        blocks = new ModuleList<Block>(Enumerable.Range(0, config.Depth)
            .Select(i => new Block(config, config.DropPathRate * i / Math.Max(1, config.Depth - 1))).ToArray());
        if (config.UsesAveragePool) fcNorm = LayerNorm(config.EmbedDim, config.LayerNormEps);
        else norm = LayerNorm(config.EmbedDim, config.LayerNormEps);
        if (config.NumClasses > 0) head = Linear(config.EmbedDim, config.NumClasses);
        RegisterComponents();
    }

    public VitConfig Config { get; }

    /// <summary>The shared relative position bias [1, heads, 1 + N, 1 + N] (null without one), for extra blocks on top.</summary>
    public Tensor? SharedBias() => sharedBias?.Bias();

    public override Tensor forward(Tensor pixels) => ForwardFeatures(pixels);

    /// <summary>timm's forward_features: [B, 1 + N, D] after the final norm ("token" pooling; identity for "avg").</summary>
    /// <param name="mask">[B, N] with 1 where the patch embedding is replaced by <c>mask_token</c>; null for none.</param>
    public Tensor ForwardFeatures(Tensor pixels, Tensor? mask = null) => ForwardLayers(pixels, mask, []).Features;

    /// <summary>
    /// Features plus the hidden states after the requested blocks (0-based; patch aggregation needs layer l). Images
    /// of another size than the configured one (multi-crop's local crops) read interpolated absolute positions.
    /// </summary>
    public (Tensor Features, IReadOnlyDictionary<int, Tensor> Hidden) ForwardLayers(Tensor pixels, Tensor? mask, IReadOnlyCollection<int> keepLayers)
    {
        using var scope = NewDisposeScope();
        long rows = pixels.shape[^2] / Config.PatchSize, columns = pixels.shape[^1] / Config.PatchSize;
        bool otherGrid = rows != Config.GridSize || columns != Config.GridSize;
        if (otherGrid && (Config.UseRelPosBias || Config.UseSharedRelPosBias))
            throw new ArgumentException($"a {rows}×{columns} patch grid differs from the configured {Config.GridSize}×{Config.GridSize}, which relative position biases need (resample the model for a new size)");
        var x = patchEmbed.forward(pixels);
        if (mask is not null)
        {
            if (maskToken is null) throw new InvalidOperationException("this model has no mask_token (config UseMaskToken)");
            var weight = mask.unsqueeze(-1).to(x.dtype);
            x = x * (1 - weight) + maskToken.to(x.dtype) * weight;
        }
        x = cat([classToken.to(x.dtype).expand(x.shape[0], -1, -1), x], 1);
        if (positionEmbedding is not null) x = x + (otherGrid ? InterpolatedPositions(positionEmbedding, rows, columns) : positionEmbedding).to(x.dtype);
        if (preNorm is not null) x = preNorm.forward(x);
        var bias = sharedBias?.Bias();
        var hidden = new Dictionary<int, Tensor>();
        for (int i = 0; i < blocks.Count; i++)
        {
            x = blocks[i].forward(x, bias);
            if (keepLayers.Contains(i)) hidden[i] = x.MoveToOuterDisposeScope();
        }
        if (norm is not null) x = norm.forward(x);
        return (x.MoveToOuterDisposeScope(), hidden);
    }

    /// <summary>
    /// Absolute position embeddings for another patch grid, as DINO and iBOT run their 96-pixel local crops: the patch
    /// positions resized bicubically by the factor (grid + 0.1) / configured grid (the 0.1 keeps the floor of the
    /// output size exact), [CLS] kept. Differentiable, so local crops train the same embedding.
    /// </summary>
    private Tensor InterpolatedPositions(Tensor positions, long rows, long columns)
    {
        int grid = Config.GridSize;
        var patches = positions[.., 1..].reshape(1, grid, grid, -1).permute(0, 3, 1, 2);
        var resized = functional.interpolate(patches, scale_factor: [(rows + 0.1) / grid, (columns + 0.1) / grid],
            mode: InterpolationMode.Bicubic, align_corners: false);
        return cat([positions[.., ..1], resized.permute(0, 2, 3, 1).reshape(1, rows * columns, -1)], 1);
    }

    /// <summary>The final norm applied to any block's hidden states (identity for "avg" pooling, which has none).</summary>
    public Tensor FinalNorm(Tensor hidden) => norm is null ? hidden.alias() : norm.forward(hidden);

    /// <summary>The linear head applied token-wise (CLIP's output projection as timm holds it); null without a head.</summary>
    public Tensor? ProjectTokens(Tensor tokens) => head?.forward(tokens);

    /// <summary>timm's forward_head: mean of patch tokens + fc_norm ("avg") or [CLS] ("token"), then the linear head.</summary>
    public Tensor ForwardHead(Tensor features)
    {
        using var scope = NewDisposeScope();
        var pooled = fcNorm is not null ? fcNorm.forward(features[.., 1..].mean([1])) : features[.., 0];
        return (head is null ? pooled : head.forward(pooled)).MoveToOuterDisposeScope();
    }
}
