using System.Runtime.InteropServices;
using MimFlow.Data.Pipeline;
using TorchSharp;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Teachers;
using MimFlow.Models.Tokenizers;
using MimFlow.Shards;
using static TorchSharp.torch;

namespace MimFlow.Precompute.Tokenize;

/// <summary>
/// The frozen tokenizer (VQ-KD or the DALL-E dVAE: codes) and teacher (a ViT such as CLIP or DINO: features) of a
/// pre-tokenization run, in evaluation mode on one device. Pixels arrive as planar uint8 views and are normalised
/// here, on the device, as each model expects: VQ-KD and ViT teachers ImageNet mean/std (CLIP teachers CLIP's own
/// statistics), the dVAE [0, 1] (mapped by DALL-E's map_pixels inside). On CUDA the models run in bfloat16.
/// </summary>
public sealed class FrozenModels : IDisposable
{
    private readonly nn.Module? tokenizer;
    private readonly VisionTransformer? teacher;
    private readonly TeacherOptions teacherOptions;
    private readonly bool clipTeacher;
    private readonly ScalarType computeType;

    public FrozenModels(string? tokenizerDirectory, string? teacherDirectory, TeacherOptions teacherOptions, Device device, int? imageSize = null)
    {
        if (tokenizerDirectory is null && teacherDirectory is null) throw new ArgumentException("pre-tokenization needs a tokenizer, a teacher, or both");
        Device = device;
        computeType = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        this.teacherOptions = teacherOptions;
        if (tokenizerDirectory is not null)
        {
            var declared = ModelDirectory.ReadSpec(tokenizerDirectory);
            int codebook = declared.Vqkd?.Codes ?? declared.Dvae?.VocabSize ?? 0;
            if (codebook > ShardSchema.MaxCodebookSize)
                throw new ArgumentException($"{tokenizerDirectory}: a codebook of {codebook:N0} codes; shards store codes as int16 (at most {ShardSchema.MaxCodebookSize:N0} codes), " +
                                            "so its codes would wrap. Tokenizers of the BEiT family use 8,192.");
            var (spec, module) = ModelDirectory.Load(tokenizerDirectory);
            if (spec.Kind == ModelKind.Vit) { module.Dispose(); throw new ArgumentException($"{tokenizerDirectory}: '{spec.Architecture}' is a ViT, not a tokenizer (vqkd or dvae); give it as --teacher"); }
            tokenizer = module;
            TokenizerSpec = spec;
            TokenizerIdentity = ModelIdentity.Of(tokenizerDirectory, spec.Architecture);
        }
        int size = imageSize ?? TokenizerSpec?.Vqkd?.Encoder.ImgSize ?? (teacherDirectory is not null ? ModelDirectory.ReadSpec(teacherDirectory).Config?.ImgSize : null) ?? 224;
        ImageSize = size;
        if (TokenizerSpec?.Vqkd is { } vqkd && vqkd.Encoder.ImgSize != size)
            throw new ArgumentException($"{tokenizerDirectory}: the VQ-KD encoder takes {vqkd.Encoder.ImgSize}×{vqkd.Encoder.ImgSize} views, not {size}");
        if (teacherDirectory is not null)
        {
            var spec = ModelDirectory.ReadSpec(teacherDirectory);
            if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"{teacherDirectory}: '{spec.Architecture}' is a {spec.Kind.ToString().ToLowerInvariant()} model; a teacher is a ViT (clip-b16, dino-*, …)");
            (TeacherSpec, teacher) = ModelDirectory.LoadVit(teacherDirectory, spec.Config!.ImgSize == size ? null : size);
            TeacherIdentity = ModelIdentity.Of(teacherDirectory, spec.Architecture);
            clipTeacher = spec.Architecture.StartsWith("clip", StringComparison.Ordinal) || spec.Config.Activation == Activation.QuickGelu;
        }
        foreach (var module in new nn.Module?[] { tokenizer, teacher })
        {
            if (module is null) continue;
            module.eval();
            module.to(device);
            if (computeType != ScalarType.Float32) module.to(computeType);
        }
    }

    public Device Device { get; }
    public ModelSpec? TokenizerSpec { get; }
    public ModelSpec? TeacherSpec { get; }
    public ModelIdentity? TokenizerIdentity { get; }
    public ModelIdentity? TeacherIdentity { get; }

    /// <summary>Side of the main (student) view: the VQ-KD / teacher input.</summary>
    public int ImageSize { get; }

    /// <summary>BEiT v1: the dVAE reads a second view at half the size (112 for 224), lanczos-resampled.</summary>
    public int? SecondViewSize => TokenizerSpec?.Kind == ModelKind.Dvae ? ImageSize / 2 : null;

    /// <summary>Which view of a draw the tokenizer reads (0 main, 1 the dVAE's).</summary>
    public int TokenizerView => SecondViewSize is null ? 0 : 1;

    public string Arithmetic => computeType == ScalarType.Float32 ? $"{Device.type.ToString().ToLowerInvariant()}-float32" : "cuda-bfloat16";

    public int CodeLength => TokenizerSpec switch
    {
        { Vqkd: { } v } => v.Encoder.NumPatches,
        { Dvae: { } d } => (SecondViewSize!.Value / d.Downsampling) * (SecondViewSize.Value / d.Downsampling),
        _ => 0,
    };

    public int CodebookSize => TokenizerSpec switch { { Vqkd: { } v } => v.Codes, { Dvae: { } d } => d.VocabSize, _ => 0 };

    public int[]? FeatureShape => TeacherSpec?.Config is { } c ? [(ImageSize / c.PatchSize) * (ImageSize / c.PatchSize), teacherOptions.Project ? c.NumClasses : c.EmbedDim] : null;

    /// <summary>Codes [rows][CodeLength] of planar uint8 views [rows, 3, s, s].</summary>
    public short[][] Codes(ReadOnlySpan<byte> planar, int rows, int side)
    {
        if (tokenizer is null) throw new InvalidOperationException("no tokenizer");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pixels = Upload(planar, rows, side);
        var codes = tokenizer switch
        {
            VqKd vqkd => vqkd.Tokenize(InputStatistics.ImageNet.Normalise(pixels / 255f)),
            DalleEncoder dvae => dvae.Tokenize(pixels / 255f),
            _ => throw new InvalidOperationException($"no codes from {tokenizer.GetName()}"),
        };
        var host = codes.to(ScalarType.Int16).cpu().contiguous();
        var flat = host.data<short>().ToArray();
        int length = (int)host.shape[1];
        return Enumerable.Range(0, rows).Select(r => flat.AsSpan(r * length, length).ToArray()).ToArray();
    }

    /// <summary>Teacher features of planar uint8 views, encoded per row (fp16, or int8 with fp16 scales per token).</summary>
    public (byte[] Features, byte[]? Scales)[] Features(ReadOnlySpan<byte> planar, int rows, int side, FeatureEncoding encoding)
    {
        if (teacher is null) throw new InvalidOperationException("no teacher");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pixels = Upload(planar, rows, side);
        var normalised = (clipTeacher ? InputStatistics.Clip : InputStatistics.ImageNet).Normalise(pixels / 255f);
        var features = TeacherFeatures.Extract(teacher, normalised, teacherOptions).to(ScalarType.Float32);
        return FeatureCodec.Encode(features, encoding);
    }

    private Tensor Upload(ReadOnlySpan<byte> planar, int rows, int side)
    {
        var host = tensor(planar.ToArray(), [rows, 3, side, side], ScalarType.Byte);
        return host.to(Device).to(computeType);
    }

    public void Dispose()
    {
        tokenizer?.Dispose();
        teacher?.Dispose();
    }
}
