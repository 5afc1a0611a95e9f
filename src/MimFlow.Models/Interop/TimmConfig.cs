using System.Globalization;
using System.Text.Json;
using MimFlow.Models.Backbones;

namespace MimFlow.Models.Interop;

/// <summary>
/// timm's constructor arguments for <c>Beit</c> and <c>VisionTransformer</c> as a <see cref="VitConfig"/> and back.
/// Arguments are plain values (int, double, bool, string or null) by timm's own names; an argument this model cannot
/// honour is an error naming it rather than a silently different network.
/// </summary>
public static class TimmConfig
{
    public const string Beit = "Beit";
    public const string VisionTransformer = "VisionTransformer";

    /// <summary>timm's default LayerNorm eps (timm.layers.LayerNorm) for both classes.</summary>
    public const double DefaultLayerNormEps = 1e-6;

    /// <summary>A timm_config.json: <c>{"timm_class": ..., "config": {arguments}, "mimflow": {"layer_norm_eps": …}}</c>.</summary>
    public static VitConfig Parse(string json, string source = "timm config")
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, ConfigFields.Strict);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not JSON ({e.Message})", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: not a JSON object of timm_class and config");
            if (!root.TryGetProperty("timm_class", out var c) || c.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{source}: timm_class is missing or not a string (Beit or VisionTransformer)");
            // Beside "config", writers record what made the file (timm_version, outputs …): informational, so not refused;
            // every constructor argument under "config" is known or refused by name.
            bool wrapped = root.TryGetProperty("config", out var args);
            if (!wrapped) args = root;
            if (args.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: 'config' is not an object of constructor arguments");
            var arguments = ArgumentsFromJson(args, source, skip: wrapped ? [] : ["timm_class", "mimflow"]);
            return Validated(FromArguments(c.GetString()!, arguments, LayerNormEpsOf(root, source) ?? DefaultLayerNormEps, source), source);
        }
    }

    /// <summary>
    /// What timm takes as a norm_layer object rather than an argument (a LayerNorm eps other than timm's for the
    /// class) travels beside the arguments as <c>"mimflow": {"layer_norm_eps": …}</c>; timm ignores it. Anything
    /// else under "mimflow", or an eps that is not a positive number, is refused naming <paramref name="source"/>.
    /// </summary>
    public static double? LayerNormEpsOf(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("mimflow", out var extras)) return null;
        if (extras.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: mimflow is not an object");
        foreach (var extra in extras.EnumerateObject())
            if (extra.Name != "layer_norm_eps") throw new InvalidDataException($"{source}: unknown field 'mimflow.{extra.Name}' (layer_norm_eps)");
        if (!extras.TryGetProperty("layer_norm_eps", out var eps)) return null;
        if (eps.ValueKind != JsonValueKind.Number || !eps.TryGetDouble(out double value) || !double.IsFinite(value) || value <= 0 || value > 1)
            throw new InvalidDataException($"{source}: mimflow.layer_norm_eps is {eps.GetRawText()}, not a number in (0, 1]");
        return value;
    }

    /// <summary>A JSON object of arguments as plain values (numbers as int when integral, else double).</summary>
    public static Dictionary<string, object?> ArgumentsFromJson(JsonElement args, string source, IReadOnlyCollection<string>? skip = null)
    {
        var values = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var property in args.EnumerateObject())
            if (skip?.Contains(property.Name) != true) values[property.Name] = ValueOf(property.Value, $"{source}: argument '{property.Name}'");
        return values;
    }

    private static object? ValueOf(JsonElement value, string what) => value.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Number => value.TryGetInt32(out int i) ? i
            : value.TryGetDouble(out double d) && double.IsFinite(d) ? d
            : throw new InvalidDataException($"{what} is {value.GetRawText()}, not a finite number"),
        _ => throw new InvalidDataException($"{what} is a JSON {value.ValueKind.ToString().ToLowerInvariant()}; MimFlow reads numbers, booleans, strings and null"),
    };

    /// <summary>timm's class, its arguments (anything not given takes timm's default) and the LayerNorm eps, as a VitConfig.</summary>
    public static VitConfig FromArguments(string timmClass, IReadOnlyDictionary<string, object?> args, double layerNormEps, string source)
    {
        bool beit = timmClass == Beit;
        if (!beit && timmClass != VisionTransformer) throw new InvalidDataException($"{source}: timm_class '{timmClass}' is not Beit or VisionTransformer");
        var known = beit ? BeitArguments : VitArguments;
        foreach (var (name, value) in args)
        {
            if (known.Contains(name) || Ignored.Contains(name)) continue;
            // Arguments this model has no counterpart for are accepted only at timm's default, where they change nothing.
            if (OnlyAtDefault.TryGetValue(name, out var fallback) && (beit ? BeitOnlyAtDefault : VitOnlyAtDefault).Contains(name))
            {
                if (!Same(value, fallback)) throw new InvalidDataException($"{source}: timm argument {name}={Show(value)} is not supported (only {Show(fallback)})");
                continue;
            }
            throw new InvalidDataException($"{source}: '{name}' is not a {timmClass} argument MimFlow supports ({string.Join(", ", known.Order())})");
        }
        // Each argument is of its type or refused by name: a boolean is not silently 0, nor a string the default.
        InvalidDataException NotA(string name, object? value, string what) => new($"{source}: {name} is {Show(value)}, not {what}");
        int Int(string name, int fallback) => !args.TryGetValue(name, out var v) || v is null ? fallback
            : v is int i ? i
            : v is double d && double.IsInteger(d) && d is >= int.MinValue and <= int.MaxValue ? (int)d
            : throw NotA(name, v, "an integer in int range");
        bool Bool(string name, bool fallback) => !args.TryGetValue(name, out var v) || v is null ? fallback : v is bool b ? b : throw NotA(name, v, "True or False");
        string? Text(string name) => !args.TryGetValue(name, out var v) || v is null ? null : v as string ?? throw NotA(name, v, "a string");
        double? Number(string name) => !args.TryGetValue(name, out var v) || v is null ? null
            : v is int or double && double.IsFinite(Convert.ToDouble(v, CultureInfo.InvariantCulture)) ? Convert.ToDouble(v, CultureInfo.InvariantCulture)
            : throw NotA(name, v, "a finite number");

        string globalPool = Text("global_pool") ?? (beit ? "avg" : "token");
        if (!beit && args.TryGetValue("fc_norm", out var fcNorm) && fcNorm is bool explicitFcNorm && explicitFcNorm != (globalPool == "avg"))
            throw new InvalidDataException($"{source}: fc_norm={Show(fcNorm)} with global_pool '{globalPool}' is not supported (the norm follows the pooling here)");
        string activation = Text("act_layer") ?? "gelu";
        var config = new VitConfig
        {
            ImgSize = Int("img_size", 224),
            PatchSize = Int("patch_size", 16),
            InChannels = Int("in_chans", 3),
            EmbedDim = Int("embed_dim", 768),
            Depth = Int("depth", 12),
            NumHeads = Int("num_heads", 12),
            MlpRatio = Number("mlp_ratio") ?? 4.0,
            NumClasses = Int("num_classes", 1000),
            BeitAttention = beit,
            QkvBias = Bool("qkv_bias", true),
            // timm's Beit defaults use_abs_pos_emb to True; its VisionTransformer drops pos_embed with pos_embed='none' (or '').
            UseAbsPosEmb = beit ? Bool("use_abs_pos_emb", true) : Text("pos_embed") is not ("none" or ""),
            UseRelPosBias = beit && Bool("use_rel_pos_bias", false),
            UseSharedRelPosBias = beit && Bool("use_shared_rel_pos_bias", false),
            // timm adds LayerScale only for a non-zero init_values.
            InitValues = Number("init_values") is double init && init != 0 ? init : null,
            LayerNormEps = layerNormEps,
            GlobalPool = globalPool,
            PreNorm = Bool("pre_norm", false),
            Activation = activation switch
            {
                "quick_gelu" => Activation.QuickGelu,
                "gelu" => Activation.Gelu,
                _ => throw new InvalidDataException($"{source}: act_layer '{activation}' is not supported (gelu, quick_gelu)"),
            },
            ClassToken = Bool("class_token", true),
        };
        return config;
    }

    /// <summary>
    /// The configuration if it is within MimFlow's bounds (<see cref="VitConfig.Problem"/>), else an error naming
    /// <paramref name="source"/> and the timm argument. Separate from <see cref="FromArguments"/>, which also builds
    /// the candidates an export compares (some of them are not buildable at the model's size).
    /// </summary>
    public static VitConfig Validated(VitConfig config, string source) =>
        config.Problem() is var (field, reason) ? throw new InvalidDataException($"{source}: {TimmName(field, config.BeitAttention)} {reason}") : config;

    /// <summary>timm's name for a <see cref="VitConfig"/> field, for errors about the arguments that set it.</summary>
    private static string TimmName(string field, bool beit) => field switch
    {
        "in_channels" => "in_chans",
        "layer_norm_eps" => "mimflow.layer_norm_eps",
        "activation" => "act_layer",
        "use_abs_pos_emb" when !beit => "pos_embed",
        _ => field,
    };

    /// <summary>timm's constructor arguments for this configuration (the inverse of <see cref="FromArguments"/>; eps aside).</summary>
    public static Dictionary<string, object?> ArgumentsOf(VitConfig config)
    {
        var arguments = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["img_size"] = config.ImgSize, ["patch_size"] = config.PatchSize, ["in_chans"] = config.InChannels,
            ["embed_dim"] = config.EmbedDim, ["depth"] = config.Depth, ["num_heads"] = config.NumHeads,
            ["mlp_ratio"] = config.MlpRatio, ["num_classes"] = config.NumClasses, ["qkv_bias"] = config.QkvBias,
            ["global_pool"] = config.GlobalPool, ["init_values"] = config.InitValues,
        };
        if (config.BeitAttention)
        {
            arguments["use_abs_pos_emb"] = config.UseAbsPosEmb;
            arguments["use_rel_pos_bias"] = config.UseRelPosBias;
            arguments["use_shared_rel_pos_bias"] = config.UseSharedRelPosBias;
        }
        else
        {
            arguments["pre_norm"] = config.PreNorm;
            arguments["act_layer"] = config.Activation == Activation.QuickGelu ? "quick_gelu" : "gelu";
            arguments["class_token"] = config.ClassToken;
            arguments["pos_embed"] = config.UseAbsPosEmb ? "learn" : "none";
        }
        return arguments;
    }

    public static string ClassOf(VitConfig config) => config.BeitAttention ? Beit : VisionTransformer;

    /// <summary>Equal as timm arguments: numbers by value (4 and 4.0 are one mlp_ratio), everything else exactly.</summary>
    public static bool Same(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (int or double, int or double) => Convert.ToDouble(a, CultureInfo.InvariantCulture) == Convert.ToDouble(b, CultureInfo.InvariantCulture),
        _ => Equals(a, b),
    };

    public static string Show(object? value) => value switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        string s => $"'{s}'",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };

    private static readonly string[] Common =
        ["img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "init_values"];

    private static readonly IReadOnlySet<string> BeitArguments = Set([.. Common, "use_abs_pos_emb", "use_rel_pos_bias", "use_shared_rel_pos_bias"]);

    private static readonly IReadOnlySet<string> VitArguments = Set([.. Common, "pre_norm", "act_layer", "class_token", "pos_embed", "fc_norm"]);

    /// <summary>Training-time or initialisation settings: they do not change the weights' names, shapes or meaning.</summary>
    private static readonly IReadOnlySet<string> Ignored = Set(
    [
        "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
        "weight_init", "fix_init", "head_init_scale", "dynamic_img_size",
    ]);

    private static readonly IReadOnlyDictionary<string, object?> OnlyAtDefault = new Dictionary<string, object?>(StringComparer.Ordinal)
    {
        ["no_embed_class"] = false, ["reg_tokens"] = 0, ["final_norm"] = true, ["qk_norm"] = false, ["proj_bias"] = true,
        ["pool_include_prefix"] = false, ["dynamic_img_pad"] = false, ["scale_attn_norm"] = false, ["scale_mlp_norm"] = false,
        ["swiglu_mlp"] = false, ["scale_mlp"] = false, ["norm_layer"] = null, ["embed_layer"] = null, ["embed_norm_layer"] = null,
        ["mlp_layer"] = null, ["block_fn"] = null, ["attn_layer"] = null,
    };

    private static readonly IReadOnlySet<string> BeitOnlyAtDefault = Set(["swiglu_mlp", "scale_mlp", "norm_layer"]);

    private static readonly IReadOnlySet<string> VitOnlyAtDefault = Set(
    [
        "no_embed_class", "reg_tokens", "final_norm", "qk_norm", "proj_bias", "pool_include_prefix", "dynamic_img_pad",
        "scale_attn_norm", "scale_mlp_norm", "norm_layer", "embed_layer", "embed_norm_layer", "mlp_layer", "block_fn", "attn_layer",
    ]);

    private static IReadOnlySet<string> Set(string[] names) => new HashSet<string>(names, StringComparer.Ordinal);
}
