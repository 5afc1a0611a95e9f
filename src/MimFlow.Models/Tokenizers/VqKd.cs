using MimFlow.Models.Backbones;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Tokenizers;

/// <summary>VQ-KD sizes: the encoder ViT, the code dimension and count, the decoder depth and the teacher's feature size.</summary>
public sealed record VqKdConfig(VitConfig Encoder, int Codes = 8192, int CodeDim = 32, int DecoderDepth = 3, int TeacherDim = 512)
{
    /// <summary>
    /// BEiT v2's tokenizer shape at a ViT size: the encoder is BEiT's ViT (q/v biases) with absolute position
    /// embeddings, no relative bias and no LayerScale, its final norm kept (patch tokens are read after it); the
    /// decoder has 3 blocks; 8192 codes of 32 dimensions; 512-d targets (CLIP ViT-B/16's projected features).
    /// </summary>
    public static VqKdConfig ForEncoder(VitConfig vit) => new(vit with
    {
        BeitAttention = true, UseAbsPosEmb = true, UseRelPosBias = false, UseSharedRelPosBias = false, InitValues = null,
        GlobalPool = "token", NumClasses = 0, UseMaskToken = false, PreNorm = false, DropPathRate = 0,
    });

    /// <summary>
    /// The first value out of its bounds (<see cref="VqKdLimits"/>, the encoder's and decoder's <see cref="VitLimits"/>),
    /// as (field as config.json names it, what is wrong), or null.
    /// </summary>
    public (string Field, string Reason)? Problem()
    {
        static string Range(long value, long min, long max) => $"is {value}, outside {min}…{max}";
        if (Encoder is null) return ("encoder", "is missing");
        if (Encoder.Problem() is var (field, reason)) return ("encoder." + field, reason);
        if (Codes is < 1 or > VqKdLimits.MaxCodes) return ("codes", Range(Codes, 1, VqKdLimits.MaxCodes));
        if (CodeDim is < 1 or > VitLimits.MaxChannels) return ("code_dim", Range(CodeDim, 1, VitLimits.MaxChannels));
        if (DecoderDepth is < 1 or > VitLimits.MaxDepth) return ("decoder_depth", Range(DecoderDepth, 1, VitLimits.MaxDepth));
        if (TeacherDim is < 1 or > VitLimits.MaxEmbedDim) return ("teacher_dim", Range(TeacherDim, 1, VitLimits.MaxEmbedDim));
        if (Decoder.Problem() is var (decoderField, decoderReason)) return ("decoder (from encoder)." + decoderField, decoderReason);
        return null;
    }

    /// <summary>The decoder: a ViT over the code grid (patch size 1, input channels = code dimension).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public VitConfig Decoder => Encoder with
    {
        ImgSize = Encoder.GridSize, PatchSize = 1, InChannels = CodeDim, Depth = DecoderDepth, NumClasses = 0, UseMaskToken = false, PreNorm = false,
    };
}

/// <summary>Absolute bounds on a VQ-KD configuration beyond its ViTs' (docs/reliability.md); BEiT v2 uses 8192 codes.</summary>
public static class VqKdLimits
{
    public const int MaxCodes = 1 << 20;
}

/// <summary>
/// BEiT v2's vector-quantised knowledge distillation tokenizer: ViT encoder → <c>encode_task_layer</c> (Linear, Tanh,
/// Linear to 32-d) → l2-normalised 8192-entry codebook (<see cref="NormEmaQuantizer"/>) → ViT decoder over the code
/// grid → <c>decode_task_layer</c> to the teacher's feature dimension, trained to maximise cosine similarity with the
/// teacher (CLIP) features. <see cref="Tokenize"/> gives the code of every patch.
/// </summary>
public sealed class VqKd : Module<Tensor, (Tensor Reconstruction, Quantized Quantized)>
{
    [ComponentName(Name = "encoder")] private readonly VisionTransformer encoder;
    [ComponentName(Name = "decoder")] private readonly VisionTransformer decoder;
    [ComponentName(Name = "encode_task_layer")] private readonly Sequential encodeTask;
    [ComponentName(Name = "decode_task_layer")] private readonly Sequential decodeTask;
    [ComponentName(Name = "quantize")] private readonly NormEmaQuantizer quantizer;

    public VqKd(VqKdConfig config) : base("VQKD")
    {
        if (config.Problem() is var (field, reason)) throw new ArgumentException($"{field} {reason}.");
        Config = config;
        encoder = new VisionTransformer(config.Encoder with { NumClasses = 0 });
        decoder = new VisionTransformer(config.Decoder);
        int dim = config.Encoder.EmbedDim;
        encodeTask = Sequential(("0", Linear(dim, dim)), ("1", Tanh()), ("2", Linear(dim, config.CodeDim)));
        decodeTask = Sequential(("0", Linear(dim, dim)), ("1", Tanh()), ("2", Linear(dim, config.TeacherDim)));
        quantizer = new NormEmaQuantizer(config.Codes, config.CodeDim);
        RegisterComponents();
    }

    public VqKdConfig Config { get; }

    public NormEmaQuantizer Quantizer => quantizer;

    /// <summary>BEiT's initialisation of encoder, decoder and task layers, and a fresh unit-norm codebook, all from one seed.</summary>
    public void Initialize(long seed)
    {
        Initialization.Apply(this, seed, layerScaleInit: null, name => !name.StartsWith("quantize.", StringComparison.Ordinal));
        quantizer.ResetCodebook(new Generator((ulong)seed ^ 0x5EED_C0DEUL));
    }

    /// <summary>Codes [B, N] (row-major patch grid) of normalised pixels [B, 3, H, W].</summary>
    public Tensor Tokenize(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        return Encode(pixels).Indices.MoveToOuterDisposeScope();
    }

    public Quantized Encode(Tensor pixels)
    {
        var patches = encoder.ForwardFeatures(pixels)[.., 1..];
        return quantizer.forward(encodeTask.forward(patches));
    }

    /// <summary>Reconstruction [B, N, teacher dim] of the teacher's patch features, and the quantisation.</summary>
    public override (Tensor Reconstruction, Quantized Quantized) forward(Tensor pixels)
    {
        var quantized = Encode(pixels);
        long batch = quantized.Codes.shape[0], grid = Config.Encoder.GridSize;
        var map = quantized.Codes.transpose(1, 2).reshape(batch, Config.CodeDim, grid, grid);
        var reconstruction = decodeTask.forward(decoder.ForwardFeatures(map)[.., 1..]);
        return (reconstruction, quantized);
    }

    /// <summary>VQ-KD's objective: 1 − cosine(reconstruction, teacher features), averaged, plus the commitment term.</summary>
    public static Tensor Loss(Tensor reconstruction, Tensor teacher, Quantized quantized)
    {
        var cosine = functional.cosine_similarity(reconstruction, teacher, dim: -1);
        return (1 - cosine).mean() + quantized.CommitmentLoss;
    }
}
