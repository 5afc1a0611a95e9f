namespace MimFlow.Models.Backbones;

public enum Activation { Gelu, QuickGelu }

/// <summary>
/// A Vision Transformer of the BEiT family, as timm's <c>Beit</c> and <c>VisionTransformer</c> constructors describe
/// it. <see cref="BeitAttention"/> selects BEiT's attention (q and v biases, no k bias, relative position bias);
/// otherwise attention has a full qkv bias, as timm's ViT.
/// </summary>
public sealed record VitConfig
{
    public int ImgSize { get; init; } = 224;
    public int PatchSize { get; init; } = 16;
    public int InChannels { get; init; } = 3;
    public int EmbedDim { get; init; } = 768;
    public int Depth { get; init; } = 12;
    public int NumHeads { get; init; } = 12;
    public double MlpRatio { get; init; } = 4.0;
    public int NumClasses { get; init; }

    public bool BeitAttention { get; init; }
    public bool QkvBias { get; init; } = true;
    public bool UseAbsPosEmb { get; init; } = true;
    public bool UseRelPosBias { get; init; }
    public bool UseSharedRelPosBias { get; init; }

    /// <summary>LayerScale init (BEiT: 0.1 base, 1e-5 large); null: no LayerScale.</summary>
    public double? InitValues { get; init; }

    /// <summary>"avg" (mean of patch tokens, then fc_norm) or "token" ([CLS] after the final norm).</summary>
    public string GlobalPool { get; init; } = "token";

    /// <summary>CLIP: a LayerNorm before the blocks (and no patch-embedding bias).</summary>
    public bool PreNorm { get; init; }

    public Activation Activation { get; init; } = Activation.Gelu;
    public bool ClassToken { get; init; } = true;
    public double LayerNormEps { get; init; } = 1e-6;
    public double DropPathRate { get; init; }

    /// <summary>A learnable <c>mask_token</c> that replaces masked patch embeddings (masked image modeling).</summary>
    public bool UseMaskToken { get; init; }

    public int GridSize => ImgSize / PatchSize;
    public int NumPatches => GridSize * GridSize;
    public int HeadDim => EmbedDim / NumHeads;
    public bool UsesAveragePool => GlobalPool == "avg";

    /// <summary>Checks the configuration (bounds first, so no later check divides by zero); ArgumentException naming the field.</summary>
    public void Validate()
    {
        if (Problem() is var (field, reason)) throw new ArgumentException($"{field} {reason}.");
    }

    /// <summary>
    /// The first value out of its bounds or inconsistent with the others, as (field as config.json names it,
    /// what is wrong), or null for a configuration that can be built. Sizes are checked against
    /// <see cref="VitLimits"/> before anything divides by them.
    /// </summary>
    public (string Field, string Reason)? Problem()
    {
        static string Range(long value, long min, long max) => $"is {value}, outside {min}…{max}";
        if (ImgSize is < 1 or > VitLimits.MaxImageSize) return ("img_size", Range(ImgSize, 1, VitLimits.MaxImageSize));
        if (PatchSize < 1 || PatchSize > ImgSize) return ("patch_size", Range(PatchSize, 1, ImgSize) + " (the image size)");
        if (ImgSize % PatchSize != 0) return ("patch_size", $"{PatchSize} does not divide img_size {ImgSize}");
        if ((long)GridSize * GridSize > VitLimits.MaxPatches)
            return ("img_size", $"{ImgSize} with patch_size {PatchSize} gives {GridSize}×{GridSize} patches, more than the limit of {VitLimits.MaxPatches:N0}");
        if (InChannels is < 1 or > VitLimits.MaxChannels) return ("in_channels", Range(InChannels, 1, VitLimits.MaxChannels));
        if (EmbedDim is < 1 or > VitLimits.MaxEmbedDim) return ("embed_dim", Range(EmbedDim, 1, VitLimits.MaxEmbedDim));
        if (Depth is < 1 or > VitLimits.MaxDepth) return ("depth", Range(Depth, 1, VitLimits.MaxDepth));
        if (NumHeads < 1 || NumHeads > EmbedDim) return ("num_heads", Range(NumHeads, 1, EmbedDim) + " (embed_dim)");
        if (EmbedDim % NumHeads != 0) return ("embed_dim", $"{EmbedDim} is not divisible by num_heads {NumHeads}");
        if (!double.IsFinite(MlpRatio) || MlpRatio <= 0 || MlpRatio > VitLimits.MaxMlpRatio || (int)(EmbedDim * MlpRatio) < 1)
            return ("mlp_ratio", $"is {MlpRatio}, not in (0, {VitLimits.MaxMlpRatio}] with at least one hidden unit");
        if (NumClasses is < 0 or > VitLimits.MaxClasses) return ("num_classes", Range(NumClasses, 0, VitLimits.MaxClasses));
        if (!double.IsFinite(LayerNormEps) || LayerNormEps <= 0 || LayerNormEps > 1) return ("layer_norm_eps", $"is {LayerNormEps}, not in (0, 1]");
        if (!double.IsFinite(DropPathRate) || DropPathRate < 0 || DropPathRate >= 1) return ("drop_path_rate", $"is {DropPathRate}, not in [0, 1)");
        if (InitValues is double init && !double.IsFinite(init)) return ("init_values", $"is {init}, not a finite number");
        if (GlobalPool is not ("avg" or "token")) return ("global_pool", $"'{GlobalPool}' is not supported (avg or token)");
        if (!Enum.IsDefined(Activation)) return ("activation", $"{(int)Activation} is not an activation");
        if (!ClassToken) return ("class_token", "is false: models without a class token are not supported");
        return null;
    }
}

/// <summary>
/// Absolute bounds on a ViT configuration, whatever a file says (docs/reliability.md). They are far above any
/// published model (ViT-22B: width 6144, 48 blocks) and keep every size product in range: the largest patch grid
/// makes a relative position index of (16,384 + 1)² int64 values (2 GiB), allocated when a block is built.
/// </summary>
public static class VitLimits
{
    public const int MaxImageSize = 8192;
    public const int MaxPatches = 16_384;
    public const int MaxChannels = 4096;
    public const int MaxEmbedDim = 65_536;
    public const int MaxDepth = 1024;
    public const double MaxMlpRatio = 64;
    public const int MaxClasses = 1 << 20;
}
