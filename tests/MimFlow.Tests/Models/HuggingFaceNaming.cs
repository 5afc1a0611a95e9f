using System.Text.Json;
using System.Text.RegularExpressions;
using MimFlow.Core.Safetensors;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

/// <summary>
/// The forward direction, timm/unilm names → transformers names, written for the tests from transformers' conversion
/// scripts (convert_beit_unilm_to_pytorch, convert_clip_original_pytorch_to_hf, convert_dino_to_pytorch) and its
/// modeling files: the import under test goes the other way, so a shared mistake would have to be made twice.
/// </summary>
internal static class HuggingFaceNaming
{
    public static Dictionary<string, Tensor> Read(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return file.Entries.ToDictionary(e => e.Name, e => tensor(file.ReadFloat32(e.Name), e.Shape), StringComparer.Ordinal);
    }

    public static void Write(string path, IEnumerable<(string Name, Tensor Value)> tensors)
    {
        var writer = new SafetensorsWriter();
        foreach (var (name, value) in tensors)
        {
            using var cpu = value.detach().to(float32).contiguous();
            writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
        }
        writer.Write(path);
    }

    public static void WriteJson(string path, object document) =>
        File.WriteAllText(path, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>timm's fused qkv rows split in transformers' order: query, key, value.</summary>
    private static (Tensor Q, Tensor K, Tensor V) Split(Tensor fused)
    {
        long d = fused.shape[0] / 3;
        return (fused.narrow(0, 0, d), fused.narrow(0, d, d), fused.narrow(0, 2 * d, d));
    }

    /// <summary>
    /// timm Beit → BeitForImageClassification (or BeitForMaskedImageModeling when <paramref name="masked"/>:
    /// unilm's norm becomes the top-level layernorm, and the MIM head is added as lm_head).
    /// </summary>
    public static List<(string, Tensor)> Beit(IReadOnlyDictionary<string, Tensor> timm, string prefix = "beit.", bool masked = false, int vocabulary = 16)
    {
        var hf = new List<(string, Tensor)>();
        var block = new Regex(@"^blocks\.(\d+)\.(.+)$");
        foreach (var (name, value) in timm)
        {
            var m = block.Match(name);
            if (m.Success)
            {
                string layer = $"{prefix}encoder.layer.{m.Groups[1].Value}.";
                switch (m.Groups[2].Value)
                {
                    case "attn.qkv.weight":
                        var (q, k, v) = Split(value);
                        hf.Add((layer + "attention.attention.query.weight", q));
                        hf.Add((layer + "attention.attention.key.weight", k));
                        hf.Add((layer + "attention.attention.value.weight", v));
                        break;
                    case "attn.q_bias": hf.Add((layer + "attention.attention.query.bias", value)); break;
                    case "attn.v_bias": hf.Add((layer + "attention.attention.value.bias", value)); break;
                    case "attn.relative_position_bias_table":
                        hf.Add((layer + "attention.attention.relative_position_bias.relative_position_bias_table", value));
                        // transformers' conversion kept the index buffer; an import must leave it out.
                        hf.Add((layer + "attention.attention.relative_position_bias.relative_position_index", zeros(4, 4)));
                        break;
                    case var rest: hf.Add((layer + BlockPart(rest), value)); break;
                }
                continue;
            }
            switch (name)
            {
                case "cls_token": hf.Add((prefix + "embeddings.cls_token", value)); break;
                case "mask_token": hf.Add((prefix + "embeddings.mask_token", value)); break;
                case "pos_embed": hf.Add((prefix + "embeddings.position_embeddings", value)); break;
                case "patch_embed.proj.weight": hf.Add((prefix + "embeddings.patch_embeddings.projection.weight", value)); break;
                case "patch_embed.proj.bias": hf.Add((prefix + "embeddings.patch_embeddings.projection.bias", value)); break;
                case "rel_pos_bias.relative_position_bias_table": hf.Add((prefix + "encoder.relative_position_bias.relative_position_bias_table", value)); break;
                case "fc_norm.weight": hf.Add((prefix + "pooler.layernorm.weight", value)); break;
                case "fc_norm.bias": hf.Add((prefix + "pooler.layernorm.bias", value)); break;
                case "norm.weight": hf.Add((masked ? "layernorm.weight" : prefix + "layernorm.weight", value)); break;
                case "norm.bias": hf.Add((masked ? "layernorm.bias" : prefix + "layernorm.bias", value)); break;
                case "head.weight": hf.Add(("classifier.weight", value)); break;
                case "head.bias": hf.Add(("classifier.bias", value)); break;
                default: throw new ArgumentException($"no transformers name for timm's '{name}'");
            }
        }
        if (masked)
        {
            long dim = timm["cls_token"].shape[2];
            hf.Add(("lm_head.weight", randn(vocabulary, dim, generator: new Generator(5))));
            hf.Add(("lm_head.bias", zeros(vocabulary)));
        }
        return hf;
    }

    private static string BlockPart(string timmPart) => timmPart switch
    {
        "attn.proj.weight" => "attention.output.dense.weight",
        "attn.proj.bias" => "attention.output.dense.bias",
        "norm1.weight" => "layernorm_before.weight",
        "norm1.bias" => "layernorm_before.bias",
        "norm2.weight" => "layernorm_after.weight",
        "norm2.bias" => "layernorm_after.bias",
        "mlp.fc1.weight" => "intermediate.dense.weight",
        "mlp.fc1.bias" => "intermediate.dense.bias",
        "mlp.fc2.weight" => "output.dense.weight",
        "mlp.fc2.bias" => "output.dense.bias",
        "gamma_1" => "lambda_1",
        "gamma_2" => "lambda_2",
        _ => throw new ArgumentException($"no transformers name for timm's block part '{timmPart}'"),
    };

    /// <summary>
    /// timm's CLIP-style VisionTransformer → CLIPModel's vision half (vision_model.*, visual_projection without bias:
    /// timm's head.bias has no counterpart and must be zero to be the same weights) plus a text tower stub.
    /// </summary>
    public static List<(string, Tensor)> Clip(IReadOnlyDictionary<string, Tensor> timm, bool withText = true)
    {
        var hf = new List<(string, Tensor)>();
        var block = new Regex(@"^blocks\.(\d+)\.(.+)$");
        const string v = "vision_model.";
        foreach (var (name, value) in timm)
        {
            var m = block.Match(name);
            if (m.Success)
            {
                string layer = $"{v}encoder.layers.{m.Groups[1].Value}.";
                string part = m.Groups[2].Value;
                if (part is "attn.qkv.weight" or "attn.qkv.bias")
                {
                    var (q, k, vv) = Split(value);
                    string kind = part.EndsWith("weight", StringComparison.Ordinal) ? "weight" : "bias";
                    hf.Add(($"{layer}self_attn.q_proj.{kind}", q));
                    hf.Add(($"{layer}self_attn.k_proj.{kind}", k));
                    hf.Add(($"{layer}self_attn.v_proj.{kind}", vv));
                    continue;
                }
                hf.Add((layer + part.Replace("norm1.", "layer_norm1.").Replace("norm2.", "layer_norm2.").Replace("attn.proj.", "self_attn.out_proj."), value));
                continue;
            }
            switch (name)
            {
                case "cls_token": hf.Add((v + "embeddings.class_embedding", value.reshape(-1))); break;
                case "pos_embed": hf.Add((v + "embeddings.position_embedding.weight", value[0])); break;
                case "patch_embed.proj.weight": hf.Add((v + "embeddings.patch_embedding.weight", value)); break;
                case "norm_pre.weight": hf.Add((v + "pre_layrnorm.weight", value)); break;
                case "norm_pre.bias": hf.Add((v + "pre_layrnorm.bias", value)); break;
                case "norm.weight": hf.Add((v + "post_layernorm.weight", value)); break;
                case "norm.bias": hf.Add((v + "post_layernorm.bias", value)); break;
                case "head.weight": hf.Add(("visual_projection.weight", value)); break;
                case "head.bias": break;
                default: throw new ArgumentException($"no transformers name for timm's '{name}'");
            }
        }
        hf.Add((v + "embeddings.position_ids", arange(timm["pos_embed"].shape[1]).unsqueeze(0).to(float32)));
        if (withText)
        {
            hf.Add(("text_model.embeddings.token_embedding.weight", randn(8, 4, generator: new Generator(2))));
            hf.Add(("text_model.final_layer_norm.weight", ones(4)));
            hf.Add(("text_projection.weight", randn(3, 4, generator: new Generator(3))));
            hf.Add(("logit_scale", tensor(2.6592f)));
        }
        return hf;
    }

    /// <summary>timm's plain VisionTransformer → ViTForImageClassification (prefix vit.) or DINO's ViTModel (no prefix, a pooler).</summary>
    public static List<(string, Tensor)> Vit(IReadOnlyDictionary<string, Tensor> timm, string prefix = "vit.", bool pooler = false)
    {
        var hf = new List<(string, Tensor)>();
        var block = new Regex(@"^blocks\.(\d+)\.(.+)$");
        foreach (var (name, value) in timm)
        {
            var m = block.Match(name);
            if (m.Success)
            {
                string layer = $"{prefix}encoder.layer.{m.Groups[1].Value}.";
                string part = m.Groups[2].Value;
                if (part is "attn.qkv.weight" or "attn.qkv.bias")
                {
                    var (q, k, vv) = Split(value);
                    string kind = part.EndsWith("weight", StringComparison.Ordinal) ? "weight" : "bias";
                    hf.Add(($"{layer}attention.attention.query.{kind}", q));
                    hf.Add(($"{layer}attention.attention.key.{kind}", k));
                    hf.Add(($"{layer}attention.attention.value.{kind}", vv));
                    continue;
                }
                hf.Add((layer + BlockPart(part), value));
                continue;
            }
            switch (name)
            {
                case "cls_token": hf.Add((prefix + "embeddings.cls_token", value)); break;
                case "pos_embed": hf.Add((prefix + "embeddings.position_embeddings", value)); break;
                case "patch_embed.proj.weight": hf.Add((prefix + "embeddings.patch_embeddings.projection.weight", value)); break;
                case "patch_embed.proj.bias": hf.Add((prefix + "embeddings.patch_embeddings.projection.bias", value)); break;
                case "norm.weight": hf.Add((prefix + "layernorm.weight", value)); break;
                case "norm.bias": hf.Add((prefix + "layernorm.bias", value)); break;
                case "head.weight": hf.Add(("classifier.weight", value)); break;
                case "head.bias": hf.Add(("classifier.bias", value)); break;
                default: throw new ArgumentException($"no transformers name for timm's '{name}'");
            }
        }
        if (pooler)
        {
            long dim = timm["cls_token"].shape[2];
            hf.Add((prefix + "pooler.dense.weight", randn(dim, dim, generator: new Generator(4))));
            hf.Add((prefix + "pooler.dense.bias", zeros(dim)));
        }
        return hf;
    }
}
