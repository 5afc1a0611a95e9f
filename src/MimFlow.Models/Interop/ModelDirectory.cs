using System.Text.Json;
using System.Text.Json.Serialization;
using MimFlow.Core.IO;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>
/// A model on disk: <c>config.json</c> (the <see cref="VitConfig"/>, plus the architecture name) and
/// <c>weights.safetensors</c> (float32, timm parameter names, so the file loads into timm with strict=True).
/// </summary>
public static class ModelDirectory
{
    public const string ConfigFileName = "config.json";
    public const string WeightsFileName = "weights.safetensors";
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public sealed record Stored(string Architecture, VitConfig Config);

    public static void Save(string directory, string architecture, VisionTransformer model)
    {
        Directory.CreateDirectory(directory);
        WriteWeights(Path.Combine(directory, WeightsFileName), model);
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFileName), JsonSerializer.Serialize(new Stored(architecture, model.Config), Json));
    }

    public static (Stored Stored, VisionTransformer Model) Load(string directory)
    {
        string configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath}: not a model directory (config.json missing)", configPath);
        var stored = JsonSerializer.Deserialize<Stored>(File.ReadAllText(configPath), Json)
            ?? throw new InvalidDataException($"{configPath}: empty configuration");
        var model = new VisionTransformer(stored.Config);
        using var weights = SafetensorsFile.Open(Path.Combine(directory, WeightsFileName));
        WeightLoader.LoadStrict(model, weights);
        return (stored, model);
    }

    /// <summary>Parameters timm's Beit / VisionTransformer do not have (left out of exports so timm loads strictly).</summary>
    public static IReadOnlySet<string> NotInTimm { get; } = new HashSet<string>(StringComparer.Ordinal) { "mask_token" };

    /// <summary>The module's state dict as float32 safetensors (names as the module names them), less <paramref name="exclude"/>.</summary>
    public static void WriteWeights(string path, nn.Module model, IReadOnlySet<string>? exclude = null)
    {
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var (name, value) in model.state_dict())
        {
            if (exclude?.Contains(name) == true) continue;
            using var cpu = value.detach().to(float32).cpu().contiguous();
            writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
        }
        writer.Write(path);
    }

    /// <summary>timm's constructor arguments for this configuration (the inverse of <see cref="TimmConfig.Parse"/>).</summary>
    public static string TimmConfigJson(VitConfig config)
    {
        var arguments = new Dictionary<string, object?>
        {
            ["img_size"] = config.ImgSize, ["patch_size"] = config.PatchSize, ["in_chans"] = config.InChannels,
            ["embed_dim"] = config.EmbedDim, ["depth"] = config.Depth, ["num_heads"] = config.NumHeads,
            ["mlp_ratio"] = config.MlpRatio, ["num_classes"] = config.NumClasses, ["qkv_bias"] = config.QkvBias,
            ["global_pool"] = config.GlobalPool,
        };
        if (config.BeitAttention)
        {
            arguments["use_abs_pos_emb"] = config.UseAbsPosEmb;
            arguments["use_rel_pos_bias"] = config.UseRelPosBias;
            arguments["use_shared_rel_pos_bias"] = config.UseSharedRelPosBias;
            arguments["init_values"] = config.InitValues;
        }
        else
        {
            arguments["pre_norm"] = config.PreNorm;
            arguments["act_layer"] = config.Activation == Activation.QuickGelu ? "quick_gelu" : "gelu";
            arguments["class_token"] = config.ClassToken;
        }
        var document = new { timm_class = config.BeitAttention ? "Beit" : "VisionTransformer", config = arguments };
        return JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true });
    }
}
