using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;
using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>A timm hub folder read as a MimFlow ViT: the configuration timm would build, and where its weights are.</summary>
/// <param name="Notes">What the reader wants the user to know (e.g. timm builds OpenAI CLIP names with GELU).</param>
public sealed record TimmHubModel(string Architecture, VitConfig Config, string WeightsPath, IReadOnlyList<string>? Labels, IReadOnlyList<string> Notes);

/// <summary>
/// timm's hub layout (what <c>timm.models.push_to_hf_hub</c> / <c>save_for_hf</c> write and <c>create_model('hf-hub:…')</c>
/// or <c>create_model('local-dir:…')</c> read): <c>config.json</c> with <c>architecture</c>, <c>num_classes</c>,
/// <c>num_features</c>, <c>global_pool</c>, optional <c>model_args</c> and <c>label_names</c>, and
/// <c>pretrained_cfg</c>; weights in <c>model.safetensors</c> (or <c>pytorch_model.bin</c>) with timm's names.
/// </summary>
public static class TimmHub
{
    public const string ConfigFileName = "config.json";
    public const string WeightsFileName = "model.safetensors";
    public const string PickleWeightsFileName = "pytorch_model.bin";

    /// <summary>The legacy pair's constructor-argument file, still written beside the hub files.</summary>
    public const string TimmConfigFileName = "timm_config.json";

    /// <summary>Whether a config.json is timm's hub configuration (an architecture with a pretrained_cfg).</summary>
    public static bool IsHubConfig(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json, ConfigFields.Strict);
            var root = document.RootElement;
            return root.ValueKind == JsonValueKind.Object && root.TryGetProperty("architecture", out var a) && a.ValueKind == JsonValueKind.String
                && root.TryGetProperty("pretrained_cfg", out _);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The weights file of a hub folder (safetensors preferred), or an error naming what the folder holds.</summary>
    public static string WeightsIn(string folder)
    {
        foreach (string name in new[] { WeightsFileName, PickleWeightsFileName })
            if (File.Exists(Path.Combine(folder, name))) return Path.Combine(folder, name);
        if (File.Exists(Path.Combine(folder, "model.safetensors.index.json")) || File.Exists(Path.Combine(folder, "pytorch_model.bin.index.json")))
            throw new InvalidDataException($"{folder}: a sharded checkpoint (*.index.json): merge the shards into one model.safetensors first");
        var present = Directory.EnumerateFiles(folder).Select(Path.GetFileName).Order().Take(12);
        throw new FileNotFoundException($"{folder}: no {WeightsFileName} or {PickleWeightsFileName} (the folder holds: {string.Join(", ", present)})");
    }

    /// <summary>Reads a timm hub folder's config.json as timm's create_model would build the model.</summary>
    public static TimmHubModel Read(string folder)
    {
        string path = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{folder}: no {ConfigFileName}: not a timm hub folder", path);
        var root = ConfigFields.ParseObject(path, ConfigFields.ReadText(path), "a timm hub config.json");
        if (root["architecture"] is not JsonValue architectureValue || architectureValue.GetValueKind() != JsonValueKind.String)
            throw new InvalidDataException(root.ContainsKey("config") || root.ContainsKey("vqkd")
                ? $"{path}: a MimFlow model directory, not a timm hub folder (it needs no import)"
                : $"{path}: no 'architecture': not a timm hub config.json");
        string architectureName = architectureValue.GetValue<string>();

        // timm's older single-dict configs are the pretrained_cfg itself with the architecture in it.
        bool nested = root.ContainsKey("pretrained_cfg");
        if (nested && root["pretrained_cfg"] is not JsonObject) throw new InvalidDataException($"{path}: pretrained_cfg is not an object");
        var pretrained = root["pretrained_cfg"] as JsonObject ?? root;
        // timm's save_for_hf writes these top-level fields (and MimFlow its "mimflow" extras); anything else is not
        // a layout this reader understands, so it is named rather than ignored.
        if (nested && root.Select(p => p.Key).FirstOrDefault(k => !HubFields.Contains(k)) is string extra)
            throw new InvalidDataException($"{path}: unknown field '{extra}' ({string.Join(", ", HubFields)})");
        var architecture = TimmArchitectures.Get(architectureName, path);
        int? numClasses = Int(root, "num_classes", path, 0, VitLimits.MaxClasses) ?? Int(pretrained, "num_classes", path, 0, VitLimits.MaxClasses, "pretrained_cfg.");
        if (nested) Int(root, "num_features", path, 0, VitLimits.MaxEmbedDim);
        int[]? inputSize = null;
        if (pretrained["input_size"] is JsonNode sizes)
        {
            string field = nested ? "pretrained_cfg.input_size" : "input_size";
            if (sizes is not JsonArray { Count: 3 } triple || triple.Any(n => n is not JsonValue v || !v.TryGetValue<int>(out _)))
                throw new InvalidDataException($"{path}: {field} is {sizes.ToJsonString()}, not [C, S, S] of integers");
            inputSize = [.. triple.Select(n => n!.GetValue<int>())];
            if (inputSize[1] != inputSize[2]) throw new InvalidDataException($"{path}: {field} [{string.Join(", ", inputSize)}] is not [C, S, S] (square inputs only)");
            if (inputSize[0] is < 1 or > VitLimits.MaxChannels || inputSize[1] is < 1 or > VitLimits.MaxImageSize)
                throw new InvalidDataException($"{path}: {field} [{string.Join(", ", inputSize)}] is outside [1…{VitLimits.MaxChannels}, 1…{VitLimits.MaxImageSize}, 1…{VitLimits.MaxImageSize}]");
        }
        var defaults = new PretrainedDefaults(numClasses, Text(pretrained, "global_pool", path), inputSize?[0], inputSize?[1],
            pretrained["fixed_input_size"] is JsonValue fixedSize && fixedSize.GetValueKind() == JsonValueKind.True);

        var modelArgs = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (root["model_args"] is JsonObject args)
        {
            using var document = JsonDocument.Parse(args.ToJsonString());
            modelArgs = TimmConfig.ArgumentsFromJson(document.RootElement, $"{path}: model_args");
        }
        else if (root["model_args"] is not null) throw new InvalidDataException($"{path}: model_args is not an object");

        double? eps;
        using (var document = JsonDocument.Parse(root.ToJsonString())) eps = TimmConfig.LayerNormEpsOf(document.RootElement, path);
        var config = TimmConfig.Validated(TimmArchitectures.Resolve(architecture, modelArgs, defaults, eps, path), path);

        var notes = new List<string>();
        string? informational = Text(root, "global_pool", path);
        if (informational is not null && informational != config.GlobalPool)
            notes.Add($"{path}: global_pool '{informational}' is informational in timm; the model is built with '{config.GlobalPool}' (set it in model_args to change it)");
        string notesText = pretrained["notes"]?.ToJsonString() ?? "";
        if (config.Activation == Activation.Gelu && config.PreNorm && notesText.Contains("QuickGELU", StringComparison.OrdinalIgnoreCase))
            notes.Add($"{architecture.Name} is built with GELU, as timm builds it; its notes say the weights are natively QuickGELU: " +
                      "model_args {\"act_layer\": \"quick_gelu\"} (or the _clip_quickgelu_ name) gives the original function");
        return new TimmHubModel(architecture.Name, config, WeightsIn(folder), LabelsOf(root, path), notes);
    }

    /// <summary>What <see cref="Write"/> decided: the architecture name, its model_args and anything timm will not reproduce.</summary>
    public sealed record Written(string Architecture, IReadOnlyDictionary<string, object?> ModelArgs, IReadOnlyList<string> Files, IReadOnlyList<string> Notes);

    /// <summary>
    /// Writes the hub layout for a ViT: model.safetensors (timm names, float32, no mask_token), config.json (the
    /// architecture whose registered arguments are closest, model_args for the rest) and timm_config.json (the same
    /// constructor arguments as one object, for <c>timm.models.beit.Beit(**config)</c> and older MimFlow imports).
    /// Weights first, config.json last.
    /// </summary>
    public static Written Write(string folder, VitConfig config, nn.Module model, IReadOnlyList<string>? labels)
    {
        var (architecture, modelArgs) = TimmArchitectures.Choose(config);
        var defaults = PretrainedDefaults.For(config);
        double? extraEps = architecture.LayerNormEps == config.LayerNormEps ? null : config.LayerNormEps;
        // The choice is checked by reading it back exactly as an import (and timm) will.
        var rebuilt = TimmArchitectures.Resolve(architecture, modelArgs, defaults, extraEps, architecture.Name);
        var expected = config with { DropPathRate = 0, UseMaskToken = false };
        if (rebuilt != expected) throw new InvalidOperationException($"{architecture.Name} with model_args {JsonSerializer.Serialize(modelArgs)} does not rebuild the model's configuration");

        var notes = new List<string>();
        if (extraEps is double eps)
            notes.Add($"LayerNorm eps {eps.ToString("R", CultureInfo.InvariantCulture)} differs from {architecture.Name}'s {architecture.LayerNormEps.ToString("R", CultureInfo.InvariantCulture)}: " +
                      "timm takes eps only through norm_layer, so timm builds its own; MimFlow keeps it under config.json's \"mimflow\"");
        if (config.UseMaskToken) notes.Add("mask_token left out: timm's classes have none (strict loading would fail)");
        if (labels is not null && labels.Count != config.NumClasses)
        {
            notes.Add($"labels left out: {labels.Count} names for a head of {config.NumClasses} classes");
            labels = null;
        }

        Directory.CreateDirectory(folder);
        ModelDirectory.WriteWeights(Path.Combine(folder, WeightsFileName), model, ModelDirectory.NotInTimm);
        AtomicFile.WriteAllText(Path.Combine(folder, TimmConfigFileName), ModelDirectory.TimmConfigJson(config));
        var statistics = config.PreNorm ? InputStatistics.Clip : InputStatistics.ImageNet;
        var document = new JsonObject
        {
            ["architecture"] = architecture.Name,
            ["num_classes"] = config.NumClasses,
            ["num_features"] = config.EmbedDim,
            ["global_pool"] = config.GlobalPool,
        };
        if (modelArgs.Count > 0) document["model_args"] = JsonSerializer.SerializeToNode(modelArgs);
        if (labels is not null) document["label_names"] = new JsonArray([.. labels.Select(l => (JsonNode?)l)]);
        document["pretrained_cfg"] = new JsonObject
        {
            ["input_size"] = new JsonArray(config.InChannels, config.ImgSize, config.ImgSize),
            ["fixed_input_size"] = true,
            ["interpolation"] = "bicubic",
            ["crop_pct"] = 0.9,
            ["crop_mode"] = "center",
            ["mean"] = new JsonArray([.. statistics.Mean.Select(v => (JsonNode?)(double)(decimal)v)]),
            ["std"] = new JsonArray([.. statistics.Std.Select(v => (JsonNode?)(double)(decimal)v)]),
            ["num_classes"] = config.NumClasses,
            ["first_conv"] = "patch_embed.proj",
            ["classifier"] = "head",
        };
        if (extraEps is double keep) document["mimflow"] = new JsonObject { ["layer_norm_eps"] = keep };
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFileName), document.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return new Written(architecture.Name, modelArgs, [WeightsFileName, TimmConfigFileName, ConfigFileName], notes);
    }

    /// <summary>The top-level fields of timm's hub config.json (timm.models._hub.save_config_for_hf) and MimFlow's extras.</summary>
    private static readonly string[] HubFields =
        ["architecture", "num_classes", "num_features", "global_pool", "model_args", "label_names", "label_descriptions", "pretrained_cfg", "mimflow"];

    private static int? Int(JsonObject node, string name, string path, int min, int max, string prefix = "")
    {
        if (!node.ContainsKey(name) || node[name] is null) return null;
        if (node[name] is not JsonValue value || !value.TryGetValue<int>(out int number) || value.GetValueKind() != JsonValueKind.Number)
            throw new InvalidDataException($"{path}: '{prefix}{name}' is {node[name]!.ToJsonString()}, not an integer");
        if (number < min || number > max) throw new InvalidDataException($"{path}: '{prefix}{name}' is {number}, outside {min}…{max}");
        return number;
    }

    private static string? Text(JsonObject node, string name, string path) => node[name] switch
    {
        null => null,
        JsonValue value when value.GetValueKind() == JsonValueKind.String => value.GetValue<string>(),
        var other => throw new InvalidDataException($"{path}: '{name}' is {other.ToJsonString()}, not a string"),
    };

    /// <summary>label_names as a list by index, or a dict of index → name (timm allows both).</summary>
    private static List<string>? LabelsOf(JsonObject root, string path)
    {
        switch (root["label_names"])
        {
            case null:
                return null;
            case JsonArray list:
                return [.. list.Select(n => Label(n, path))];
            case JsonObject map:
                var byIndex = map.Select(p => (Index: int.TryParse(p.Key, out int i) ? i : throw new InvalidDataException($"{path}: label_names key '{p.Key}' is not an index"),
                    Name: Label(p.Value, path))).OrderBy(p => p.Index).ToList();
                if (byIndex.Where((p, i) => p.Index != i).Any()) throw new InvalidDataException($"{path}: label_names indices are not 0…{byIndex.Count - 1}");
                return [.. byIndex.Select(p => p.Name)];
            default:
                throw new InvalidDataException($"{path}: label_names is neither a list nor an object");
        }
    }

    private static string Label(JsonNode? node, string path) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>()
        : throw new InvalidDataException($"{path}: label_names holds {node?.ToJsonString() ?? "null"}, not a name (a string)");
}
