using MimFlow.Models.Backbones;
using MimFlow.Models.Tokenizers;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

public enum ModelKind { Vit, Vqkd, Dvae }

/// <summary>
/// What a model directory holds: the architecture name and exactly one configuration — a ViT (<see cref="Config"/>),
/// a VQ-KD tokenizer (<see cref="Vqkd"/>) or a DALL-E dVAE encoder (<see cref="Dvae"/>).
/// </summary>
public sealed record ModelSpec(string Architecture, VitConfig? Config = null, VqKdConfig? Vqkd = null, DalleEncoderConfig? Dvae = null)
{
    public ModelKind Kind => Vqkd is not null ? ModelKind.Vqkd : Dvae is not null ? ModelKind.Dvae : ModelKind.Vit;

    public void Validate(string source)
    {
        int given = (Config is null ? 0 : 1) + (Vqkd is null ? 0 : 1) + (Dvae is null ? 0 : 1);
        if (given != 1) throw new InvalidDataException($"{source}: a model configuration needs exactly one of config, vqkd, dvae (found {given})");
    }
}

/// <summary>The named architectures of <c>mimflow model init</c> and how each becomes a module.</summary>
public static class ModelCatalog
{
    public static IReadOnlyList<string> Names { get; } = Architectures.Names.Concat(["vqkd-tiny", "vqkd-base", "dvae"]).ToList();

    public static ModelSpec Spec(string name, int numClasses = 0) => name switch
    {
        "vqkd-tiny" => new ModelSpec(name, Vqkd: VqKdConfig.ForEncoder(Architectures.Get("vit-tiny"))),
        "vqkd-base" => new ModelSpec(name, Vqkd: VqKdConfig.ForEncoder(Architectures.Get("vit-base"))),
        "dvae" => new ModelSpec(name, Dvae: new DalleEncoderConfig()),
        _ when Architectures.Names.Contains(name) => new ModelSpec(name, Config: Architectures.Get(name, numClasses)),
        _ => throw new ArgumentException($"unknown architecture '{name}'; known: {string.Join(", ", Names)}."),
    };

    public static nn.Module Build(ModelSpec spec) => spec.Kind switch
    {
        ModelKind.Vqkd => new VqKd(spec.Vqkd!),
        ModelKind.Dvae => new DalleEncoder(spec.Dvae!),
        _ => new VisionTransformer(spec.Config!),
    };

    /// <summary>A new module of the spec with its reference initialisation, seeded (same seed, same weights).</summary>
    public static nn.Module Create(ModelSpec spec, long seed)
    {
        switch (spec.Kind)
        {
            case ModelKind.Dvae:
                return DalleEncoder.Create(spec.Dvae!, seed);
            case ModelKind.Vqkd:
                var vqkd = new VqKd(spec.Vqkd!);
                vqkd.Initialize(seed);
                return vqkd;
            default:
                var vit = new VisionTransformer(spec.Config!);
                Initialization.Apply(vit, seed);
                return vit;
        }
    }
}
