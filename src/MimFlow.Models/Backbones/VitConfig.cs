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

    public void Validate()
    {
        if (ImgSize % PatchSize != 0) throw new ArgumentException($"img_size {ImgSize} is not divisible by patch_size {PatchSize}.");
        if (EmbedDim % NumHeads != 0) throw new ArgumentException($"embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}.");
        if (GlobalPool is not ("avg" or "token")) throw new ArgumentException($"global_pool '{GlobalPool}' is not supported (avg or token).");
        if (!ClassToken) throw new ArgumentException("models without a class token are not supported.");
    }
}
