using MimFlow.Models.Backbones;

namespace MimFlow.Models.Interop;

/// <summary>
/// One architecture name timm registers (<c>@register_model</c>): its class, the arguments its function passes
/// (<c>model_args</c>), the input size of its default pretrained configuration, and the LayerNorm eps its
/// <c>norm_layer</c> fixes (1e-5 for the CLIP towers, timm's 1e-6 otherwise).
/// </summary>
public sealed record TimmArchitecture(string Name, string TimmClass, IReadOnlyDictionary<string, object?> Arguments, int InputSize, double LayerNormEps)
{
    /// <summary>The family an unmatched configuration is exported under (the base name plus model_args).</summary>
    public bool IsFamilyBase { get; init; }
}

/// <summary>
/// The timm architecture names MimFlow builds, with the arguments of each registered function as
/// timm/models/beit.py and vision_transformer.py (timm 1.0) write them. A name may carry a pretrained tag after the
/// dot (<c>vit_base_patch16_224.dino</c>, <c>vit_base_patch16_clip_224.openai</c>): the tag selects weights, not the
/// network, so it is ignored for the shape.
/// </summary>
public static class TimmArchitectures
{
    private const double ClipEps = 1e-5;

    public static IReadOnlyList<TimmArchitecture> All { get; } = Build();

    public static IReadOnlyList<string> Names { get; } = All.Select(a => a.Name).ToList();

    /// <summary>The entry for a name (tag after the dot ignored); an unknown name is an error listing the known ones.</summary>
    public static TimmArchitecture Get(string name, string source)
    {
        string bare = name.Split('.', 2)[0];
        return All.FirstOrDefault(a => a.Name == bare)
            ?? throw new InvalidDataException($"{source}: architecture '{name}' is not one MimFlow builds; known: {string.Join(", ", Names)}");
    }

    /// <summary>
    /// timm's model for a name as <c>create_model</c> builds it from a hub folder: the registered arguments,
    /// overridden by <paramref name="modelArgs"/>; then, for what neither sets, num_classes, global_pool and in_chans
    /// from <paramref name="defaults"/> (the pretrained config) and img_size from its input_size when the input size is
    /// fixed; then the class defaults.
    /// </summary>
    public static VitConfig Resolve(TimmArchitecture architecture, IReadOnlyDictionary<string, object?> modelArgs, PretrainedDefaults defaults,
        double? layerNormEps, string source)
    {
        var args = new Dictionary<string, object?>(architecture.Arguments, StringComparer.Ordinal);
        foreach (var (name, value) in modelArgs) args[name] = value;
        if (defaults.NumClasses is int classes && classes >= 0) args.TryAdd("num_classes", classes);
        if (defaults.GlobalPool is string pool) args.TryAdd("global_pool", pool);
        if (defaults.InChannels is int channels) args.TryAdd("in_chans", channels);
        if (defaults.FixedInputSize && defaults.InputSize is int size) args.TryAdd("img_size", size);
        return TimmConfig.FromArguments(architecture.TimmClass, args, layerNormEps ?? architecture.LayerNormEps, source);
    }

    /// <summary>
    /// The name and the model_args under which timm builds exactly <paramref name="config"/> from a hub folder whose
    /// pretrained config gives its classes and input size: the registered name needing the fewest model_args, a
    /// matching LayerNorm eps first (timm cannot take eps as an argument), then one whose default input size is the
    /// model's, then the family's base name.
    /// </summary>
    public static (TimmArchitecture Architecture, Dictionary<string, object?> ModelArgs) Choose(VitConfig config)
    {
        string timmClass = TimmConfig.ClassOf(config);
        var wanted = TimmConfig.ArgumentsOf(config);
        var defaults = PretrainedDefaults.For(config);
        (TimmArchitecture Architecture, Dictionary<string, object?> ModelArgs)? best = null;
        int bestScore = int.MaxValue;
        foreach (var candidate in All.Where(a => a.TimmClass == timmClass))
        {
            var built = TimmConfig.ArgumentsOf(Resolve(candidate, new Dictionary<string, object?>(), defaults, config.LayerNormEps, candidate.Name));
            var differences = wanted.Where(w => !TimmConfig.Same(w.Value, built[w.Key])).ToDictionary(w => w.Key, w => w.Value, StringComparer.Ordinal);
            int score = differences.Count * 4 + (candidate.LayerNormEps == config.LayerNormEps ? 0 : 100)
                + (candidate.InputSize == config.ImgSize ? 0 : 2) + (candidate.IsFamilyBase ? 0 : 1);
            if (score < bestScore) (best, bestScore) = ((candidate, differences), score);
        }
        return best ?? throw new InvalidOperationException($"no timm architecture for class {timmClass}");
    }

    private static List<TimmArchitecture> Build()
    {
        var list = new List<TimmArchitecture>();
        void Beit(string name, int dim, int depth, int heads, double init, int size, bool registersSize = false, bool familyBase = false)
        {
            var args = new Dictionary<string, object?>
            {
                ["patch_size"] = 16, ["embed_dim"] = dim, ["depth"] = depth, ["num_heads"] = heads,
                ["use_abs_pos_emb"] = false, ["use_rel_pos_bias"] = true, ["init_values"] = init,
            };
            if (registersSize) args["img_size"] = size;
            list.Add(new TimmArchitecture(name, TimmConfig.Beit, args, size, TimmConfig.DefaultLayerNormEps) { IsFamilyBase = familyBase });
        }
        Beit("beit_base_patch16_224", 768, 12, 12, 0.1, 224, familyBase: true);
        Beit("beit_base_patch16_384", 768, 12, 12, 0.1, 384, registersSize: true);
        Beit("beit_large_patch16_224", 1024, 24, 16, 1e-5, 224);
        Beit("beit_large_patch16_384", 1024, 24, 16, 1e-5, 384, registersSize: true);
        Beit("beit_large_patch16_512", 1024, 24, 16, 1e-5, 512, registersSize: true);
        Beit("beitv2_base_patch16_224", 768, 12, 12, 1e-5, 224);
        Beit("beitv2_large_patch16_224", 1024, 24, 16, 1e-5, 224);

        void Vit(string name, int patch, int dim, int depth, int heads, int size, bool clip = false, bool quickGelu = false, bool familyBase = false)
        {
            var args = new Dictionary<string, object?> { ["patch_size"] = patch, ["embed_dim"] = dim, ["depth"] = depth, ["num_heads"] = heads };
            if (clip) args["pre_norm"] = true;
            if (quickGelu) args["act_layer"] = "quick_gelu";
            list.Add(new TimmArchitecture(name, TimmConfig.VisionTransformer, args, size, clip ? ClipEps : TimmConfig.DefaultLayerNormEps) { IsFamilyBase = familyBase });
        }
        Vit("vit_base_patch16_224", 16, 768, 12, 12, 224, familyBase: true);
        Vit("vit_tiny_patch16_224", 16, 192, 12, 3, 224);
        Vit("vit_tiny_patch16_384", 16, 192, 12, 3, 384);
        Vit("vit_small_patch32_224", 32, 384, 12, 6, 224);
        Vit("vit_small_patch32_384", 32, 384, 12, 6, 384);
        Vit("vit_small_patch16_224", 16, 384, 12, 6, 224);
        Vit("vit_small_patch16_384", 16, 384, 12, 6, 384);
        Vit("vit_small_patch8_224", 8, 384, 12, 6, 224);
        Vit("vit_base_patch32_224", 32, 768, 12, 12, 224);
        Vit("vit_base_patch32_384", 32, 768, 12, 12, 384);
        Vit("vit_base_patch16_384", 16, 768, 12, 12, 384);
        Vit("vit_base_patch8_224", 8, 768, 12, 12, 224);
        Vit("vit_large_patch32_224", 32, 1024, 24, 16, 224);
        Vit("vit_large_patch32_384", 32, 1024, 24, 16, 384);
        Vit("vit_large_patch16_224", 16, 1024, 24, 16, 224);
        Vit("vit_large_patch16_384", 16, 1024, 24, 16, 384);
        Vit("vit_large_patch14_224", 14, 1024, 24, 16, 224);
        Vit("vit_huge_patch14_224", 14, 1280, 32, 16, 224);

        // CLIP towers: pre-norm, no patch bias, LayerNorm eps 1e-5. timm builds the plain names with GELU even for
        // OpenAI's weights (its notes say "natively QuickGELU"); the _quickgelu_ names are the original function.
        Vit("vit_base_patch16_clip_224", 16, 768, 12, 12, 224, clip: true, familyBase: true);
        Vit("vit_xsmall_patch16_clip_224", 16, 256, 10, 4, 224, clip: true);
        Vit("vit_medium_patch32_clip_224", 32, 512, 12, 8, 224, clip: true);
        Vit("vit_medium_patch16_clip_224", 16, 512, 12, 8, 224, clip: true);
        Vit("vit_betwixt_patch32_clip_224", 32, 640, 12, 10, 224, clip: true);
        Vit("vit_base_patch32_clip_224", 32, 768, 12, 12, 224, clip: true);
        Vit("vit_base_patch32_clip_256", 32, 768, 12, 12, 256, clip: true);
        Vit("vit_base_patch32_clip_384", 32, 768, 12, 12, 384, clip: true);
        Vit("vit_base_patch32_clip_448", 32, 768, 12, 12, 448, clip: true);
        Vit("vit_base_patch16_clip_384", 16, 768, 12, 12, 384, clip: true);
        Vit("vit_base_patch16_plus_clip_240", 16, 896, 12, 14, 240, clip: true);
        Vit("vit_large_patch14_clip_224", 14, 1024, 24, 16, 224, clip: true);
        Vit("vit_large_patch14_clip_336", 14, 1024, 24, 16, 336, clip: true);
        Vit("vit_huge_patch14_clip_224", 14, 1280, 32, 16, 224, clip: true);
        Vit("vit_huge_patch14_clip_336", 14, 1280, 32, 16, 336, clip: true);
        Vit("vit_huge_patch14_clip_378", 14, 1280, 32, 16, 378, clip: true);
        Vit("vit_base_patch16_clip_quickgelu_224", 16, 768, 12, 12, 224, clip: true, quickGelu: true, familyBase: true);
        Vit("vit_base_patch32_clip_quickgelu_224", 32, 768, 12, 12, 224, clip: true, quickGelu: true);
        Vit("vit_large_patch14_clip_quickgelu_224", 14, 1024, 24, 16, 224, clip: true, quickGelu: true);
        Vit("vit_large_patch14_clip_quickgelu_336", 14, 1024, 24, 16, 336, clip: true, quickGelu: true);
        Vit("vit_huge_patch14_clip_quickgelu_224", 14, 1280, 32, 16, 224, clip: true, quickGelu: true);
        Vit("vit_huge_patch14_clip_quickgelu_378", 14, 1280, 32, 16, 378, clip: true, quickGelu: true);
        return list;
    }
}

/// <summary>
/// What a hub folder's <c>pretrained_cfg</c> (with the top-level <c>num_classes</c> folded in, as timm does) gives
/// <c>create_model</c> for arguments neither the registered function nor model_args set.
/// </summary>
public sealed record PretrainedDefaults(int? NumClasses, string? GlobalPool, int? InChannels, int? InputSize, bool FixedInputSize)
{
    /// <summary>What an export writes for this configuration.</summary>
    public static PretrainedDefaults For(VitConfig config) => new(config.NumClasses, null, config.InChannels, config.ImgSize, FixedInputSize: true);
}
