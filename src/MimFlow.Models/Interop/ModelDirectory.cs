using System.Text.Json;
using System.Text.Json.Serialization;
using MimFlow.Core.IO;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>
/// A model on disk: <c>config.json</c> (a <see cref="ModelSpec"/>: the architecture name and its configuration) and
/// <c>weights.safetensors</c> (float32; ViTs with timm parameter names, so the file loads into timm with strict=True;
/// VQ-KD with unilm's names; the dVAE encoder with DALL-E's).
/// </summary>
public static class ModelDirectory
{
    public const string ConfigFileName = "config.json";
    public const string WeightsFileName = "weights.safetensors";
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Weights first, configuration last: a directory with a config.json is complete.</summary>
    public static void Save(string directory, ModelSpec spec, nn.Module model)
    {
        spec.Validate(directory);
        Directory.CreateDirectory(directory);
        WriteWeights(Path.Combine(directory, WeightsFileName), model);
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFileName), JsonSerializer.Serialize(spec, Json));
    }

    public static void Save(string directory, string architecture, VisionTransformer model) =>
        Save(directory, new ModelSpec(architecture, Config: model.Config), model);

    /// <summary>
    /// The model directory a path names: the path itself, or, for a training run folder (a <c>latest.json</c> naming
    /// <c>checkpoints/NAME/</c>), that checkpoint's <c>backbone/</c>, so a later stage can name the run it continues.
    /// </summary>
    public static string Locate(string path)
    {
        if (File.Exists(Path.Combine(path, ConfigFileName))) return path;
        string pointer = Path.Combine(path, RunPointerFileName);
        if (!File.Exists(pointer)) return path;
        string checkpoint = Path.Combine(path, "checkpoints", CheckpointNamedBy(pointer));
        // A run folder stands for its latest backbone: that backbone is checked against the checkpoint's record first.
        FolderChecksums.Verify(checkpoint, under: "backbone/");
        return Path.Combine(checkpoint, "backbone");
    }

    /// <summary>
    /// Beside config.json when the imported checkpoint named its classes (HF id2label, timm label_names): a JSON array
    /// of label names by output index. Kept apart from the spec because a new head (fine-tuning) makes them stale.
    /// </summary>
    public const string LabelsFileName = "labels.json";

    public static void WriteLabels(string directory, IReadOnlyList<string> labels) =>
        AtomicFile.WriteAllText(Path.Combine(directory, LabelsFileName), JsonSerializer.Serialize(labels, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>The label names of a model directory, or null where it has none.</summary>
    public static IReadOnlyList<string>? ReadLabels(string directory)
    {
        string path = Path.Combine(Locate(directory), LabelsFileName);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<List<string>>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a JSON array of label names ({e.Message})", e); }
    }

    /// <summary>The file in a training run folder that names its latest checkpoint.</summary>
    public const string RunPointerFileName = "latest.json";

    /// <summary>The checkpoint folder name a run pointer holds: a plain name inside <c>checkpoints/</c>, never a path.</summary>
    public static string CheckpointNamedBy(string pointer)
    {
        string? checkpoint;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(pointer));
            checkpoint = document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("checkpoint", out var name)
                && name.ValueKind == JsonValueKind.String ? name.GetString() : null;
        }
        catch (JsonException e) { throw new InvalidDataException($"{pointer}: not a run pointer ({e.Message})", e); }
        if (checkpoint is null || !PathNames.IsPlainFileName(checkpoint))
            throw new InvalidDataException($"{pointer}: 'checkpoint' must name a folder inside checkpoints/ (got {(checkpoint is null ? "none" : $"'{checkpoint}'")})");
        return checkpoint;
    }

    public static ModelSpec ReadSpec(string directory)
    {
        directory = Locate(directory);
        string configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath}: not a model directory (config.json missing)", configPath);
        ModelSpec? spec;
        string text = File.ReadAllText(configPath);
        if (TimmHub.IsHubConfig(text))
            throw new InvalidDataException($"{configPath}: a timm hub folder, not a MimFlow model directory: import it with 'mimflow model import --from timm --weights {directory}'");
        try { spec = JsonSerializer.Deserialize<ModelSpec>(text, Json); }
        catch (JsonException e) { throw new InvalidDataException($"{configPath}: not a model configuration ({e.Message})", e); }
        if (spec is null) throw new InvalidDataException($"{configPath}: empty configuration");
        spec.Validate(configPath);
        return spec;
    }

    /// <summary>The model (any kind) with its weights loaded strictly.</summary>
    public static (ModelSpec Spec, nn.Module Model) Load(string directory)
    {
        directory = Locate(directory);
        var spec = ReadSpec(directory);
        var model = ModelCatalog.Build(spec);
        try
        {
            using var weights = SafetensorsFile.Open(Path.Combine(directory, WeightsFileName));
            WeightLoader.LoadStrict(model, weights);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return (spec, model);
    }

    /// <summary>
    /// A ViT model directory; with <paramref name="imageSize"/> the ViT is built for that input size and its position
    /// embeddings and relative position tables are resampled to the new patch grid.
    /// </summary>
    public static (ModelSpec Spec, VisionTransformer Model) LoadVit(string directory, int? imageSize = null)
    {
        directory = Locate(directory);
        var spec = ReadSpec(directory);
        if (spec.Kind != ModelKind.Vit)
            throw new InvalidDataException($"{Path.Combine(directory, ConfigFileName)}: '{spec.Architecture}' is a {spec.Kind.ToString().ToLowerInvariant()} model, not a ViT");
        var config = imageSize is int size ? spec.Config! with { ImgSize = size } : spec.Config!;
        var model = new VisionTransformer(config);
        try
        {
            using var weights = SafetensorsFile.Open(Path.Combine(directory, WeightsFileName));
            WeightLoader.LoadStrict(model, weights, resamplePositions: imageSize is not null);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return (spec with { Config = config }, model);
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

    /// <summary>timm_config.json for this configuration (the inverse of <see cref="TimmConfig.Parse"/>).</summary>
    public static string TimmConfigJson(VitConfig config)
    {
        // timm takes the LayerNorm eps through norm_layer (e.g. partial(nn.LayerNorm, eps=1e-5) for CLIP), not as an
        // argument: it is recorded beside the constructor arguments so a re-import keeps it.
        var document = new
        {
            timm_class = TimmConfig.ClassOf(config), config = TimmConfig.ArgumentsOf(config),
            mimflow = new Dictionary<string, object> { ["layer_norm_eps"] = config.LayerNormEps },
        };
        return JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true });
    }
}
