using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>
/// A Hugging Face transformers <c>config.json</c>: the vision model's fields (for CLIPConfig, its
/// <c>vision_config</c>), the top level (CLIP's <c>projection_dim</c>), and where it was read, for errors.
/// </summary>
public sealed record HuggingFaceConfig(string Path, string? ModelType, JsonObject Fields, JsonObject Root)
{
    public const string FileName = "config.json";

    public static HuggingFaceConfig Load(string path)
    {
        var root = ConfigFields.ParseObject(path, ConfigFields.ReadText(path), "a transformers config.json");
        string? modelType = root["model_type"] is JsonValue t && t.GetValueKind() == JsonValueKind.String ? t.GetValue<string>() : null;
        // CLIPConfig nests the vision tower's fields; transformers writes there only what differs from CLIPVisionConfig's defaults.
        var fields = modelType == "clip" ? root["vision_config"] as JsonObject ?? [] : root;
        return new HuggingFaceConfig(path, modelType, fields, root);
    }

    /// <summary>A field of the vision model (or, failing that, the top level), null where config.json leaves it out.</summary>
    public JsonNode? Field(string name) => Fields[name] ?? (ReferenceEquals(Fields, Root) ? null : Root[name]);

    /// <summary>
    /// id2label as names by index (null where absent or only transformers' placeholder LABEL_i names).
    /// </summary>
    public IReadOnlyList<string>? Labels()
    {
        if (Field("id2label") is not JsonObject map || map.Count == 0) return null;
        var byIndex = new SortedDictionary<int, string>();
        foreach (var (key, value) in map)
        {
            if (!int.TryParse(key, NumberStyles.Integer, CultureInfo.InvariantCulture, out int index) || index < 0)
                throw new InvalidDataException($"{Path}: id2label key '{key}' is not an index");
            byIndex[index] = value is JsonValue name && name.GetValueKind() == JsonValueKind.String ? name.GetValue<string>()
                : throw new InvalidDataException($"{Path}: id2label '{key}' is {value?.ToJsonString() ?? "null"}, not a label name (a string)");
        }
        if (byIndex.Keys.Last() != byIndex.Count - 1) throw new InvalidDataException($"{Path}: id2label indices are not 0…{byIndex.Count - 1}");
        var names = byIndex.Values.ToList();
        return names.Select((n, i) => n == $"LABEL_{i}").All(b => b) ? null : names;
    }

    /// <summary>The number of labels config.json states (id2label, else num_labels), null where it states none.</summary>
    public int? LabelCount() => Field("id2label") switch
    {
        JsonObject map => map.Count,
        null => Field("num_labels") switch
        {
            null => null,
            JsonValue n when n.GetValueKind() == JsonValueKind.Number && n.TryGetValue<int>(out int count) && count >= 0 => count,
            var other => throw new InvalidDataException($"{Path}: num_labels is {other.ToJsonString()}, not a count"),
        },
        var other => throw new InvalidDataException($"{Path}: id2label is {other.ToJsonString()}, not an object of index → name"),
    };
}

/// <summary>
/// Imports of Hugging Face transformers checkpoints: BEiT (BeitModel, BeitForMaskedImageModeling,
/// BeitForImageClassification; data2vec-vision shares the naming), CLIP's vision tower (CLIPVisionModel,
/// CLIPVisionModelWithProjection, CLIPModel) and ViT (ViTModel, ViTForImageClassification, DINO's hub checkpoints).
/// The configuration is read off the tensors; where a config.json comes with them, every field the tensors also tell
/// must agree (a field config.json leaves out takes transformers' default, as transformers would), and the fields
/// the tensors cannot tell (eps, activation, heads) come from it. docs/model-interop.md has the mapping tables.
/// </summary>
public static partial class ForeignCheckpoints
{
    private static readonly IReadOnlyDictionary<string, object> BeitDefaults = new Dictionary<string, object>
    {
        ["hidden_size"] = 768, ["num_hidden_layers"] = 12, ["num_attention_heads"] = 12, ["intermediate_size"] = 3072,
        ["hidden_act"] = "gelu", ["layer_norm_eps"] = 1e-12, ["image_size"] = 224, ["patch_size"] = 16, ["num_channels"] = 3,
        ["use_mask_token"] = false, ["use_absolute_position_embeddings"] = false, ["use_relative_position_bias"] = false,
        ["use_shared_relative_position_bias"] = false, ["layer_scale_init_value"] = 0.1, ["use_mean_pooling"] = true,
    };

    private static readonly IReadOnlyDictionary<string, object> ClipVisionDefaults = new Dictionary<string, object>
    {
        ["hidden_size"] = 768, ["intermediate_size"] = 3072, ["projection_dim"] = 512, ["num_hidden_layers"] = 12,
        ["num_attention_heads"] = 12, ["num_channels"] = 3, ["image_size"] = 224, ["patch_size"] = 32, ["hidden_act"] = "quick_gelu",
        ["layer_norm_eps"] = 1e-5,
    };

    private static readonly IReadOnlyDictionary<string, object> VitDefaults = new Dictionary<string, object>
    {
        ["hidden_size"] = 768, ["num_hidden_layers"] = 12, ["num_attention_heads"] = 12, ["intermediate_size"] = 3072,
        ["hidden_act"] = "gelu", ["layer_norm_eps"] = 1e-12, ["image_size"] = 224, ["patch_size"] = 16, ["num_channels"] = 3,
        ["qkv_bias"] = true,
    };

    /// <summary>
    /// transformers' BEiT: <c>{beit|data2vec_vision}.embeddings.*</c> → cls_token, mask_token, pos_embed,
    /// patch_embed.proj; per layer <c>attention.attention.{query,key,value}</c> → attn.qkv.weight (q, k, v stacked; the
    /// key has no bias) with query/value biases → q_bias/v_bias; <c>attention.output.dense</c> → attn.proj;
    /// layernorm_before/after → norm1/norm2; intermediate.dense/output.dense → mlp.fc1/fc2; lambda_1/2 → gamma_1/2;
    /// relative position tables per layer or shared; <c>layernorm</c> → norm ([CLS] pooling), <c>pooler.layernorm</c>
    /// → fc_norm (mean pooling); <c>classifier</c> → head. The MIM model's top-level <c>layernorm</c> is the
    /// backbone's final norm (unilm's <c>norm</c>, which transformers' conversion moved there); <c>lm_head</c>, the
    /// segmentation heads and <c>relative_position_index</c> buffers are left out.
    /// </summary>
    public static ForeignCheckpoint HuggingFaceBeit(INamedTensors file, HuggingFaceConfig? config, int? heads = null)
    {
        var source = new HuggingFaceSource(file);
        var fields = new HuggingFaceFields(config, BeitDefaults, file.Origin, ["beit", "data2vec-vision"]);
        string p = source.PrefixOf(["beit.", "data2vec_vision.", ""], "embeddings.patch_embeddings.projection.weight", "a BEiT");
        source.LeaveOut(n => n.EndsWith("relative_position_index", StringComparison.Ordinal) || n.StartsWith("lm_head.", StringComparison.Ordinal)
            || n.StartsWith("decode_head.", StringComparison.Ordinal) || n.StartsWith("auxiliary_head.", StringComparison.Ordinal)
            || Regex.IsMatch(n, @"^fpn\d\."));
        string patchWeight = p + "embeddings.patch_embeddings.projection.weight";
        int[] patchShape = Dims(file, patchWeight, 4);
        int dim = patchShape[0], patch = patchShape[2];
        int depth = source.CountLayers(p + "encoder.layer.");
        string? positions = source.Find(p + "embeddings.position_embeddings");
        string? shared = source.Find(p + "encoder.relative_position_bias.relative_position_bias_table");
        string? perLayer = source.Find(p + "encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table");
        string? table = perLayer ?? shared;
        int grid = positions is not null ? GridOf(Dims(file, positions, 3)[1] - 1, positions, file)
            : table is not null ? TableGridOf(Dims(file, table, 2)[0], table, file)
            : throw new InvalidDataException($"{file.Origin}: neither position_embeddings nor a relative position table: the patch grid is unknown");
        int headCount = table is not null
            ? fields.Agree("num_attention_heads", Dims(file, table, 2)[1], table)
            : fields.Int("num_attention_heads") ?? heads ?? StandardHeads(dim, file);
        if (heads is int given && given != headCount) throw new InvalidDataException($"{file.Origin}: --heads {given} disagrees with the checkpoint ({headCount} heads)");
        string fc1 = p + "encoder.layer.0.intermediate.dense.weight";
        int hidden = Dims(file, fc1, 2)[0];
        fields.Agree("hidden_size", dim, patchWeight);
        fields.Agree("num_hidden_layers", depth, p + "encoder.layer.*");
        fields.Agree("intermediate_size", hidden, fc1);
        fields.Agree("patch_size", patch, patchWeight);
        fields.Agree("num_channels", patchShape[1], patchWeight);
        fields.Agree("image_size", GridSide(grid, patch), positions ?? table!);
        fields.Agree("use_absolute_position_embeddings", positions is not null, p + "embeddings.position_embeddings");
        fields.Agree("use_relative_position_bias", perLayer is not null, p + "encoder.layer.*.attention.attention.relative_position_bias");
        fields.Agree("use_shared_relative_position_bias", shared is not null, p + "encoder.relative_position_bias");
        bool maskToken = source.Has(p + "embeddings.mask_token");
        fields.Agree("use_mask_token", maskToken, p + "embeddings.mask_token");
        bool layerScale = source.Has(p + "encoder.layer.0.lambda_1");
        double? scaleInit = fields.Double("layer_scale_init_value");
        if (scaleInit is double init && init > 0 != layerScale)
            fields.Disagree("layer_scale_init_value", init.ToString("R", CultureInfo.InvariantCulture), layerScale ? "lambda_1/lambda_2 (LayerScale)" : "no lambda_1/lambda_2 (no LayerScale)");

        var tensors = new TranslatedTensors(file.Origin);
        var notes = new List<string>();
        source.Map(tensors, "cls_token", p + "embeddings.cls_token");
        if (maskToken) source.Map(tensors, "mask_token", p + "embeddings.mask_token");
        if (positions is not null) source.Map(tensors, "pos_embed", positions);
        if (shared is not null) source.Map(tensors, "rel_pos_bias.relative_position_bias_table", shared);
        source.MapPair(tensors, "patch_embed.proj", p + "embeddings.patch_embeddings.projection");
        bool qkvBias = source.Has(p + "encoder.layer.0.attention.attention.query.bias");
        for (int i = 0; i < depth; i++)
        {
            string from = $"{p}encoder.layer.{i}.", to = $"blocks.{i}.";
            source.Stack(tensors, to + "attn.qkv.weight", dim, from + "attention.attention.query.weight", from + "attention.attention.key.weight", from + "attention.attention.value.weight");
            if (qkvBias)
            {
                source.Map(tensors, to + "attn.q_bias", from + "attention.attention.query.bias");
                source.Map(tensors, to + "attn.v_bias", from + "attention.attention.value.bias");
            }
            if (perLayer is not null)
                source.Map(tensors, to + "attn.relative_position_bias_table", from + "attention.attention.relative_position_bias.relative_position_bias_table");
            source.MapPair(tensors, to + "attn.proj", from + "attention.output.dense");
            source.MapPair(tensors, to + "norm1", from + "layernorm_before");
            source.MapPair(tensors, to + "norm2", from + "layernorm_after");
            source.MapPair(tensors, to + "mlp.fc1", from + "intermediate.dense");
            source.MapPair(tensors, to + "mlp.fc2", from + "output.dense");
            if (layerScale)
            {
                source.Map(tensors, to + "gamma_1", from + "lambda_1");
                source.Map(tensors, to + "gamma_2", from + "lambda_2");
            }
        }

        // Which norm closes the backbone: transformers' use_mean_pooling puts it in the pooler (timm's fc_norm),
        // otherwise it is the model's layernorm (timm's norm); the MIM model keeps unilm's norm at its top level.
        bool finalNorm = source.Has(p + "layernorm.weight"), poolerNorm = source.Has(p + "pooler.layernorm.weight");
        bool mimNorm = p.Length > 0 && !finalNorm && source.Has("layernorm.weight");
        if (finalNorm || poolerNorm) fields.Agree("use_mean_pooling", poolerNorm, finalNorm ? p + "layernorm" : p + "pooler.layernorm");
        string globalPool;
        if (poolerNorm)
        {
            source.MapPair(tensors, "fc_norm", p + "pooler.layernorm");
            globalPool = "avg";
        }
        else if (finalNorm || mimNorm)
        {
            source.MapPair(tensors, "norm", finalNorm ? p + "layernorm" : "layernorm");
            globalPool = "token";
        }
        else
        {
            // BeitModel without its pooler under mean pooling has no final norm at all: a fresh fc_norm (identity
            // affine) stands in, as BEiT fine-tuning starts one; features are then transformers' last_hidden_state.
            tensors.Add("fc_norm.weight", [dim], () => ones(dim));
            tensors.Add("fc_norm.bias", [dim], () => zeros(dim));
            notes.Add("fc_norm made (weight 1, bias 0): the checkpoint has neither a final layernorm nor a pooler");
            globalPool = "avg";
        }
        if (source.Has("layernorm.weight") && !mimNorm && p.Length > 0) source.LeaveOut(n => n.StartsWith("layernorm.", StringComparison.Ordinal));
        int classes = source.MapHead(tensors, "classifier", fields);
        source.ThrowOnRemaining("an HF BEiT");

        var vit = new VitConfig
        {
            ImgSize = GridSide(grid, patch), PatchSize = patch, InChannels = patchShape[1], EmbedDim = dim, Depth = depth, NumHeads = HeadsOf(fields, headCount, dim),
            MlpRatio = (double)hidden / dim, NumClasses = classes, BeitAttention = true, QkvBias = qkvBias,
            UseAbsPosEmb = positions is not null, UseRelPosBias = perLayer is not null, UseSharedRelPosBias = shared is not null,
            InitValues = layerScale ? scaleInit is > 0 ? scaleInit : dim >= 1024 ? 1e-5 : 0.1 : null,
            GlobalPool = globalPool, UseMaskToken = maskToken,
            LayerNormEps = EpsOf(fields, (double)BeitDefaults["layer_norm_eps"]),
            Activation = ActivationOf(fields, (string)BeitDefaults["hidden_act"]),
        };
        return new ForeignCheckpoint(new ModelSpec("beit", Config: vit), tensors, source.LeftOut)
        {
            Labels = classes > 0 ? config?.Labels() : null, Notes = notes,
        };
    }

    /// <summary>
    /// transformers' CLIP vision tower: <c>vision_model.embeddings.{class_embedding [D] → cls_token [1,1,D],
    /// patch_embedding → patch_embed.proj (no bias), position_embedding.weight [1+N,D] → pos_embed [1,1+N,D]}</c>,
    /// <c>pre_layrnorm</c> → norm_pre, per layer <c>layer_norm1</c> → norm1, <c>self_attn.{q,k,v}_proj</c> → attn.qkv
    /// (stacked q, k, v), <c>self_attn.out_proj</c> → attn.proj, <c>layer_norm2</c> → norm2, <c>mlp.fc1/fc2</c>;
    /// <c>post_layernorm</c> → norm; <c>visual_projection.weight</c> [E,D] → head.weight with a zero head.bias.
    /// transformers applies post_layernorm to the pooled [CLS] only, OpenAI and timm (ln_post, norm) to every token:
    /// here it is timm's norm, so features[:, 0] is transformers' pooler_output and logits its image_embeds, while
    /// transformers' last_hidden_state is the last block's output before that norm. The text tower, text_projection
    /// and logit_scale are left out.
    /// </summary>
    public static ForeignCheckpoint HuggingFaceClip(INamedTensors file, HuggingFaceConfig? config, int? heads = null)
    {
        var source = new HuggingFaceSource(file);
        var fields = new HuggingFaceFields(config, ClipVisionDefaults, file.Origin, ["clip", "clip_vision_model"]);
        source.LeaveOut(n => n.StartsWith("text_model.", StringComparison.Ordinal) || n.StartsWith("text_projection.", StringComparison.Ordinal)
            || n == "logit_scale" || n.EndsWith("embeddings.position_ids", StringComparison.Ordinal));
        string p = source.PrefixOf(["vision_model.", ""], "embeddings.patch_embedding.weight", "a CLIP vision");
        string patchWeight = p + "embeddings.patch_embedding.weight", positions = p + "embeddings.position_embedding.weight";
        int[] patchShape = Dims(file, patchWeight, 4);
        int width = patchShape[0], patch = patchShape[2];
        int grid = GridOf(Dims(file, positions, 2)[0] - 1, positions, file);
        int depth = source.CountLayers(p + "encoder.layers.");
        string fc1 = p + "encoder.layers.0.mlp.fc1.weight";
        int hidden = Dims(file, fc1, 2)[0];
        fields.Agree("hidden_size", width, patchWeight);
        fields.Agree("num_hidden_layers", depth, p + "encoder.layers.*");
        fields.Agree("intermediate_size", hidden, fc1);
        fields.Agree("patch_size", patch, patchWeight);
        fields.Agree("num_channels", patchShape[1], patchWeight);
        fields.Agree("image_size", GridSide(grid, patch), positions);
        // CLIP's own rule (width / 64) where no config.json says otherwise, as the OpenAI import does.
        int headCount = fields.Int("num_attention_heads") ?? heads ?? width / 64;
        if (heads is int given && given != headCount) throw new InvalidDataException($"{file.Origin}: --heads {given} disagrees with {config?.Path} ({headCount} heads)");

        // Reshaped below: they must have the width the patch embedding gives, or the translation fails inside libtorch.
        if (Dims(file, p + "embeddings.class_embedding", 1)[0] != width) throw WidthMismatch(file, p + "embeddings.class_embedding", width);
        if (Dims(file, positions, 2)[1] != width) throw WidthMismatch(file, positions, width);
        var tensors = new TranslatedTensors(file.Origin);
        source.Map(tensors, "patch_embed.proj.weight", patchWeight);
        source.Map(tensors, "cls_token", p + "embeddings.class_embedding", [1, 1, width], t => t.reshape(1, 1, width));
        source.Map(tensors, "pos_embed", positions, [1, (grid * grid) + 1, width], t => t.unsqueeze(0));
        source.MapPair(tensors, "norm_pre", p + "pre_layrnorm");
        for (int i = 0; i < depth; i++)
        {
            string from = $"{p}encoder.layers.{i}.", to = $"blocks.{i}.";
            source.MapPair(tensors, to + "norm1", from + "layer_norm1");
            source.Stack(tensors, to + "attn.qkv.weight", width, from + "self_attn.q_proj.weight", from + "self_attn.k_proj.weight", from + "self_attn.v_proj.weight");
            source.Stack(tensors, to + "attn.qkv.bias", width, from + "self_attn.q_proj.bias", from + "self_attn.k_proj.bias", from + "self_attn.v_proj.bias");
            source.MapPair(tensors, to + "attn.proj", from + "self_attn.out_proj");
            source.MapPair(tensors, to + "norm2", from + "layer_norm2");
            source.MapPair(tensors, to + "mlp.fc1", from + "mlp.fc1");
            source.MapPair(tensors, to + "mlp.fc2", from + "mlp.fc2");
        }
        source.MapPair(tensors, "norm", p + "post_layernorm");
        int embed = 0;
        if (source.Find("visual_projection.weight") is string projection)
        {
            embed = Dims(file, projection, 2)[0];
            fields.Agree("projection_dim", embed, projection);
            source.Map(tensors, "head.weight", projection);
            tensors.Add("head.bias", [embed], () => zeros(embed));
        }
        source.ThrowOnRemaining("an HF CLIP vision tower");

        var vit = new VitConfig
        {
            ImgSize = GridSide(grid, patch), PatchSize = patch, InChannels = patchShape[1], EmbedDim = width, Depth = depth, NumHeads = HeadsOf(fields, headCount, width),
            MlpRatio = (double)hidden / width, NumClasses = embed, PreNorm = true,
            LayerNormEps = EpsOf(fields, (double)ClipVisionDefaults["layer_norm_eps"]),
            Activation = ActivationOf(fields, (string)ClipVisionDefaults["hidden_act"]),
        };
        return new ForeignCheckpoint(new ModelSpec("clip", Config: vit), tensors, source.LeftOut);
    }

    /// <summary>
    /// transformers' ViT (ViTModel, ViTForImageClassification, ViTForMaskedImageModeling; DINO's hub checkpoints are
    /// ViTModel without the <c>vit.</c> prefix): embeddings → cls_token, mask_token, pos_embed, patch_embed.proj; per
    /// layer <c>attention.attention.{query,key,value}</c> → attn.qkv (stacked q, k, v, with biases),
    /// <c>attention.output.dense</c> → attn.proj, layernorm_before/after → norm1/norm2, intermediate.dense/output.dense
    /// → mlp.fc1/fc2; <c>layernorm</c> → norm; <c>classifier</c> → head ([CLS] after the norm, as timm). Left out: the
    /// tanh <c>pooler</c> (no timm counterpart) and SimMIM's <c>decoder</c>.
    /// </summary>
    public static ForeignCheckpoint HuggingFaceVit(INamedTensors file, HuggingFaceConfig? config, int? heads = null)
    {
        var source = new HuggingFaceSource(file);
        var fields = new HuggingFaceFields(config, VitDefaults, file.Origin, ["vit"]);
        string p = source.PrefixOf(["vit.", ""], "embeddings.patch_embeddings.projection.weight", "an HF ViT");
        source.LeaveOut(n => n.StartsWith(p + "pooler.", StringComparison.Ordinal) || n.StartsWith("decoder.", StringComparison.Ordinal));
        string patchWeight = p + "embeddings.patch_embeddings.projection.weight", positions = p + "embeddings.position_embeddings";
        int[] patchShape = Dims(file, patchWeight, 4);
        int dim = patchShape[0], patch = patchShape[2];
        int grid = GridOf(Dims(file, positions, 3)[1] - 1, positions, file);
        int depth = source.CountLayers(p + "encoder.layer.");
        string fc1 = p + "encoder.layer.0.intermediate.dense.weight";
        int hidden = Dims(file, fc1, 2)[0];
        bool qkvBias = source.Has(p + "encoder.layer.0.attention.attention.query.bias");
        fields.Agree("hidden_size", dim, patchWeight);
        fields.Agree("num_hidden_layers", depth, p + "encoder.layer.*");
        fields.Agree("intermediate_size", hidden, fc1);
        fields.Agree("patch_size", patch, patchWeight);
        fields.Agree("num_channels", patchShape[1], patchWeight);
        fields.Agree("image_size", GridSide(grid, patch), positions);
        fields.Agree("qkv_bias", qkvBias, p + "encoder.layer.0.attention.attention.query.bias");
        int headCount = fields.Int("num_attention_heads") ?? heads ?? StandardHeads(dim, file);
        if (heads is int given && given != headCount) throw new InvalidDataException($"{file.Origin}: --heads {given} disagrees with {config?.Path} ({headCount} heads)");

        var tensors = new TranslatedTensors(file.Origin);
        source.Map(tensors, "cls_token", p + "embeddings.cls_token");
        bool maskToken = source.Has(p + "embeddings.mask_token");
        if (maskToken) source.Map(tensors, "mask_token", p + "embeddings.mask_token");
        source.Map(tensors, "pos_embed", positions);
        source.MapPair(tensors, "patch_embed.proj", p + "embeddings.patch_embeddings.projection");
        for (int i = 0; i < depth; i++)
        {
            string from = $"{p}encoder.layer.{i}.", to = $"blocks.{i}.";
            string attention = from + "attention.attention.";
            source.Stack(tensors, to + "attn.qkv.weight", dim, attention + "query.weight", attention + "key.weight", attention + "value.weight");
            if (qkvBias) source.Stack(tensors, to + "attn.qkv.bias", dim, attention + "query.bias", attention + "key.bias", attention + "value.bias");
            source.MapPair(tensors, to + "attn.proj", from + "attention.output.dense");
            source.MapPair(tensors, to + "norm1", from + "layernorm_before");
            source.MapPair(tensors, to + "norm2", from + "layernorm_after");
            source.MapPair(tensors, to + "mlp.fc1", from + "intermediate.dense");
            source.MapPair(tensors, to + "mlp.fc2", from + "output.dense");
        }
        source.MapPair(tensors, "norm", p + "layernorm");
        int classes = source.MapHead(tensors, "classifier", fields);
        source.ThrowOnRemaining("an HF ViT");

        var vit = new VitConfig
        {
            ImgSize = GridSide(grid, patch), PatchSize = patch, InChannels = patchShape[1], EmbedDim = dim, Depth = depth, NumHeads = HeadsOf(fields, headCount, dim),
            MlpRatio = (double)hidden / dim, NumClasses = classes, QkvBias = qkvBias, UseMaskToken = maskToken,
            LayerNormEps = EpsOf(fields, (double)VitDefaults["layer_norm_eps"]),
            Activation = ActivationOf(fields, (string)VitDefaults["hidden_act"]),
        };
        return new ForeignCheckpoint(new ModelSpec("vit", Config: vit), tensors, source.LeftOut)
        {
            Labels = classes > 0 ? config?.Labels() : null,
        };
    }

    /// <summary>layer_norm_eps from config.json (or the default), refused by name unless in (0, 1].</summary>
    private static double EpsOf(HuggingFaceFields fields, double fallback)
    {
        double eps = fields.Double("layer_norm_eps") ?? fallback;
        if (eps is <= 0 or > 1) throw new InvalidDataException($"{fields.ConfigPath}: layer_norm_eps is {eps.ToString("R", CultureInfo.InvariantCulture)}, not in (0, 1]");
        return eps;
    }

    /// <summary>Heads from config.json, --heads or a rule, refused by name unless they divide the width.</summary>
    private static int HeadsOf(HuggingFaceFields fields, int heads, int width)
    {
        if (heads < 1 || heads > width || width % heads != 0)
            throw new InvalidDataException($"{fields.ConfigPath}: num_attention_heads is {heads}, which does not divide the width {width} the weights give");
        return heads;
    }

    private static Activation ActivationOf(HuggingFaceFields fields, string fallback)
    {
        string act = fields.Text("hidden_act") ?? fallback;
        return act switch
        {
            // transformers' "gelu" is the exact (erf) GELU, as timm's nn.GELU.
            "gelu" => Activation.Gelu,
            "quick_gelu" => Activation.QuickGelu,
            _ => throw new InvalidDataException($"{fields.ConfigPath}: hidden_act '{act}' is not supported (gelu, quick_gelu)"),
        };
    }

    /// <summary>
    /// A config.json's fields against what the tensors say: without a config.json the tensors decide; with one, a
    /// field it leaves out takes transformers' default, and any disagreement is an error naming the file and field.
    /// </summary>
    private sealed class HuggingFaceFields
    {
        private readonly HuggingFaceConfig? config;
        private readonly IReadOnlyDictionary<string, object> defaults;
        private readonly string weights;

        public HuggingFaceFields(HuggingFaceConfig? config, IReadOnlyDictionary<string, object> defaults, string weights, IReadOnlyList<string> modelTypes)
        {
            this.config = config;
            this.defaults = defaults;
            this.weights = weights;
            if (config?.ModelType is string type && !modelTypes.Contains(type))
                throw new InvalidDataException($"{config.Path}: model_type '{type}' is not {string.Join(" or ", modelTypes)}: wrong --from for this checkpoint?");
        }

        public string ConfigPath => config?.Path ?? weights;

        private JsonNode? Raw(string field) => config?.Field(field);

        public int? Int(string field)
        {
            if (config is null) return null;
            static int? Integer(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out int i) ? i : null;
            return Raw(field) switch
            {
                null => defaults.TryGetValue(field, out var d) ? Convert.ToInt32(d, CultureInfo.InvariantCulture) : null,
                // transformers accepts image_size / patch_size as a pair; here they must be square.
                JsonArray pair when pair.Count == 2 && Integer(pair[0]) is int side && Integer(pair[1]) == side => side,
                JsonValue v when Integer(v) is int value => value,
                var other => throw new InvalidDataException($"{config.Path}: {field} is {other.ToJsonString()}, not an integer (or a square pair of them)"),
            };
        }

        public double? Double(string field)
        {
            if (config is null) return null;
            return Raw(field) switch
            {
                null => defaults.TryGetValue(field, out var d) ? Convert.ToDouble(d, CultureInfo.InvariantCulture) : null,
                JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out double d) && double.IsFinite(d) => d,
                var other => throw new InvalidDataException($"{config.Path}: {field} is {other.ToJsonString()}, not a finite number"),
            };
        }

        public bool? Bool(string field)
        {
            if (config is null) return null;
            return Raw(field) switch
            {
                null => defaults.TryGetValue(field, out var d) ? (bool)d : null,
                JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
                var other => throw new InvalidDataException($"{config.Path}: {field} is {other.ToJsonString()}, not true or false"),
            };
        }

        public string? Text(string field)
        {
            if (config is null) return null;
            return Raw(field) switch
            {
                null => defaults.TryGetValue(field, out var d) ? (string)d : null,
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                var other => throw new InvalidDataException($"{config.Path}: {field} is {other.ToJsonString()}, not a string"),
            };
        }

        public int Agree(string field, int actual, string evidence)
        {
            if (Int(field) is int stated && stated != actual) Disagree(field, stated.ToString(CultureInfo.InvariantCulture), $"{actual} ({evidence})");
            return actual;
        }

        public bool Agree(string field, bool actual, string evidence)
        {
            if (Bool(field) is bool stated && stated != actual) Disagree(field, stated ? "true" : "false", $"{(actual ? "true" : "false")} ({evidence})");
            return actual;
        }

        public void AgreeLabels(int classes, string evidence)
        {
            if (config?.LabelCount() is int stated && stated != classes)
                Disagree(config.Field("id2label") is not null ? "id2label" : "num_labels", $"{stated} labels", $"{classes} classes ({evidence})");
        }

        public void Disagree(string field, string stated, string actual)
        {
            string how = Raw(field) is null ? $"{stated} (transformers' default: config.json leaves it out)" : stated;
            throw new InvalidDataException($"{config!.Path}: {field} is {how}, but the weights {weights} say {actual}");
        }
    }

    /// <summary>The tensors of an HF checkpoint being renamed: each name is used once, left out, or reported as unexpected.</summary>
    private sealed class HuggingFaceSource(INamedTensors file)
    {
        private readonly HashSet<string> remaining = new(file.Names, StringComparer.Ordinal);
        private readonly List<string> leftOut = [];

        public IReadOnlyList<string> LeftOut => leftOut;

        public bool Has(string name) => file.Contains(name);

        public string? Find(string name) => file.Contains(name) ? name : null;

        public long[] ShapeOf(string name) => file.Contains(name) ? file.ShapeOf(name) : throw new InvalidDataException($"{file.Origin}: '{name}' is missing");

        /// <summary>The prefix (of <paramref name="prefixes"/>, in order) under which <paramref name="probe"/> is found.</summary>
        public string PrefixOf(IReadOnlyList<string> prefixes, string probe, string what) =>
            prefixes.FirstOrDefault(p => file.Contains(p + probe))
            ?? throw new InvalidDataException($"{file.Origin}: no {string.Join(" or ", prefixes.Select(p => $"'{p}{probe}'"))}: not {what} checkpoint in transformers' naming");

        public int CountLayers(string prefix)
        {
            var layer = new Regex("^" + Regex.Escape(prefix) + @"(\d+)\.");
            int count = file.Names.Select(n => layer.Match(n)).Where(m => m.Success).Select(m => Index(m.Groups[1].Value) + 1).DefaultIfEmpty(0).Max();
            return count > 0 ? count : throw new InvalidDataException($"{file.Origin}: no '{prefix}0.*' tensors");
        }

        public void LeaveOut(Func<string, bool> which)
        {
            foreach (string name in remaining.Where(which).ToList())
            {
                remaining.Remove(name);
                leftOut.Add(name);
            }
        }

        private string Take(string name)
        {
            if (!file.Contains(name)) throw new InvalidDataException($"{file.Origin}: '{name}' is missing");
            if (!remaining.Remove(name)) throw new InvalidOperationException($"{file.Origin}: '{name}' mapped twice");
            return name;
        }

        public void Map(TranslatedTensors tensors, string target, string name, long[]? shape = null, Func<Tensor, Tensor>? transform = null)
        {
            Take(name);
            tensors.Add(target, shape ?? file.ShapeOf(name), () =>
            {
                var raw = file.Read(name);
                if (transform is null) return raw;
                using (raw) return transform(raw);
            });
        }

        /// <summary><c>{from}.weight</c>/<c>.bias</c> → <c>{to}.weight</c>/<c>.bias</c> (the bias only where there is one).</summary>
        public void MapPair(TranslatedTensors tensors, string to, string from)
        {
            Map(tensors, to + ".weight", from + ".weight");
            if (file.Contains(from + ".bias")) Map(tensors, to + ".bias", from + ".bias");
        }

        /// <summary>q, k and v projections ([D, …] each) stacked into timm's fused qkv ([3D, …]) in that order.</summary>
        public void Stack(TranslatedTensors tensors, string target, int dim, params string[] names)
        {
            // q, k and v must have one shape: the stacked tensor's declared shape is the first one's, and libtorch
            // refuses to concatenate different ranks only when the values are read.
            long[] first = file.Contains(names[0]) ? file.ShapeOf(names[0]) : [];
            foreach (string name in names.Select(Take))
                if (file.ShapeOf(name) is not [var rows, ..] || rows != dim || !file.ShapeOf(name).SequenceEqual(first))
                    throw new InvalidDataException($"{file.Origin}: '{name}' has shape [{string.Join(", ", file.ShapeOf(name))}], " +
                                                   $"expected {dim} rows and the shape of '{names[0]}' [{string.Join(", ", first)}]");
            long[] shape = [.. first];
            shape[0] = 3L * dim;
            tensors.Add(target, shape, () =>
            {
                using var scope = NewDisposeScope();
                return cat(names.Select(file.Read).ToArray(), 0).MoveToOuterDisposeScope();
            });
        }

        /// <summary>The classification head (<c>{name}.weight</c> [K, D]) as timm's head; its number of classes (0: none).</summary>
        public int MapHead(TranslatedTensors tensors, string name, HuggingFaceFields fields)
        {
            if (!file.Contains(name + ".weight")) return 0;
            int classes = Dims(file, name + ".weight", 2)[0];
            fields.AgreeLabels(classes, name + ".weight");
            MapPair(tensors, "head", name);
            return classes;
        }

        public void ThrowOnRemaining(string what)
        {
            if (remaining.Count > 0)
                throw new InvalidDataException($"{file.Origin}: unexpected tensors for {what}: {string.Join(", ", remaining.Order().Take(8))}{(remaining.Count > 8 ? ", …" : "")}");
        }
    }
}
