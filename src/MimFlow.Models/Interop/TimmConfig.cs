using System.Text.Json;
using MimFlow.Models.Backbones;

namespace MimFlow.Models.Interop;

/// <summary>timm's constructor arguments for <c>Beit</c> and <c>VisionTransformer</c> (as in timm_config.json) as a <see cref="VitConfig"/>.</summary>
public static class TimmConfig
{
    public static VitConfig Parse(string json, string source = "timm config")
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        string timmClass = root.TryGetProperty("timm_class", out var c) ? c.GetString() ?? "" : "";
        var args = root.TryGetProperty("config", out var cfg) ? cfg : root;
        // What timm takes as a norm_layer object rather than an argument (CLIP's LayerNorm eps 1e-5) travels beside the config.
        var extras = root.TryGetProperty("mimflow", out var m) ? m : default;
        bool beit = timmClass == "Beit";
        if (!beit && timmClass != "VisionTransformer") throw new InvalidDataException($"{source}: timm_class '{timmClass}' is not Beit or VisionTransformer");
        int Int(string name, int fallback) => args.TryGetProperty(name, out var v) ? v.GetInt32() : fallback;
        bool Bool(string name, bool fallback) => args.TryGetProperty(name, out var v) ? v.GetBoolean() : fallback;
        string? Text(string name) => args.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        double? Number(string name) => args.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

        if (Bool("no_embed_class", false)) throw new InvalidDataException($"{source}: no_embed_class is not supported");
        string activation = Text("act_layer") ?? "gelu";
        return new VitConfig
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
            // timm's Beit defaults use_abs_pos_emb to True; its VisionTransformer drops pos_embed with pos_embed='none'.
            UseAbsPosEmb = beit ? Bool("use_abs_pos_emb", true) : Text("pos_embed") != "none",
            UseRelPosBias = beit && Bool("use_rel_pos_bias", false),
            UseSharedRelPosBias = beit && Bool("use_shared_rel_pos_bias", false),
            // timm adds LayerScale only for a non-zero init_values.
            InitValues = Number("init_values") is double init && init != 0 ? init : null,
            LayerNormEps = extras.ValueKind == JsonValueKind.Object && extras.TryGetProperty("layer_norm_eps", out var eps) ? eps.GetDouble() : 1e-6,
            GlobalPool = Text("global_pool") ?? (beit ? "avg" : "token"),
            PreNorm = Bool("pre_norm", false),
            Activation = activation switch
            {
                "quick_gelu" => Activation.QuickGelu,
                "gelu" => Activation.Gelu,
                _ => throw new InvalidDataException($"{source}: act_layer '{activation}' is not supported (gelu, quick_gelu)"),
            },
            ClassToken = Bool("class_token", true),
        };
    }
}
