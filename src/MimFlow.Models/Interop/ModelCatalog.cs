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

    /// <summary>
    /// Refuses a spec that cannot be built or is not what it says: not exactly one configuration, an architecture name
    /// MimFlow does not know or of another kind, or a value out of its bounds. One InvalidDataException naming
    /// <paramref name="source"/> and the field as config.json spells it (<c>config.depth</c>, <c>vqkd.encoder.num_heads</c>).
    /// </summary>
    public void Validate(string source)
    {
        int given = (Config is null ? 0 : 1) + (Vqkd is null ? 0 : 1) + (Dvae is null ? 0 : 1);
        if (given != 1) throw new InvalidDataException($"{source}: a model configuration needs exactly one of config, vqkd, dvae (found {given})");
        if (ModelCatalog.ArchitectureProblem(Architecture, Kind) is string architecture) throw new InvalidDataException($"{source}: architecture {architecture}");
        var problem = Kind switch
        {
            ModelKind.Vqkd => Vqkd!.Problem() is var (field, reason) ? ("vqkd." + field, reason) : ((string, string)?)null,
            ModelKind.Dvae => Dvae!.Problem() is var (field, reason) ? ("dvae." + field, reason) : null,
            _ => Config!.Problem() is var (field, reason) ? ("config." + field, reason) : null,
        };
        if (problem is var (name, why)) throw new InvalidDataException($"{source}: {name} {why}");
    }
}

/// <summary>The named architectures of <c>mimflow model init</c> and how each becomes a module.</summary>
public static class ModelCatalog
{
    public static IReadOnlyList<string> Names { get; } = Architectures.Names.Concat(["vqkd-tiny", "vqkd-base", "dvae"]).ToList();

    /// <summary>
    /// Architecture families and the kind each builds: the part before the first '-' of every catalog name, and the
    /// names imports write (beit, vit, clip, vqkd, dvae). A model directory's architecture is a family, optionally
    /// followed by '-' and a variant (<c>beit-base</c>, <c>vit-test</c>).
    /// </summary>
    private static readonly IReadOnlyDictionary<string, ModelKind> Families = Names
        .Select(name => KeyValuePair.Create(name.Split('-')[0], Spec(name).Kind))
        .Concat([KeyValuePair.Create("beit", ModelKind.Vit), KeyValuePair.Create("vit", ModelKind.Vit), KeyValuePair.Create("clip", ModelKind.Vit),
            KeyValuePair.Create("vqkd", ModelKind.Vqkd), KeyValuePair.Create("dvae", ModelKind.Dvae)])
        .DistinctBy(f => f.Key)
        .ToDictionary(StringComparer.Ordinal);

    /// <summary>What is wrong with an architecture name for a model of <paramref name="kind"/>, or null.</summary>
    public static string? ArchitectureProblem(string? architecture, ModelKind kind)
    {
        if (string.IsNullOrEmpty(architecture)) return "is empty: it names the model's family (vit, beit, clip, dino, vqkd, dvae …)";
        string family = architecture.Split('-', 2)[0];
        bool wellFormed = architecture.Length <= 64 && architecture.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '_' or '.')
                          && !architecture.EndsWith('-');
        if (!wellFormed || !Families.TryGetValue(family, out var familyKind))
            return $"'{architecture}' is not a family MimFlow knows ({string.Join(", ", Families.Keys.Order(StringComparer.Ordinal))}, optionally followed by -variant)";
        if (familyKind != kind)
            return $"'{architecture}' names a {familyKind.ToString().ToLowerInvariant()} model, but the configuration is a {kind.ToString().ToLowerInvariant()}";
        return null;
    }

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
