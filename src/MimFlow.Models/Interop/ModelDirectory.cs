using System.Text.Json;
using System.Text.Json.Nodes;
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
        // Set, not left to the first (de)serialisation: ReadConfig asks for the contract before either.
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
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
        List<string?> labels;
        try { labels = JsonSerializer.Deserialize<List<string?>>(ConfigFields.ReadText(path)) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a JSON array of label names ({e.Message})", e); }
        int missing = labels.IndexOf(null);
        if (missing >= 0) throw new InvalidDataException($"{path}: label {missing} is null, not a name");
        return labels!;
    }

    /// <summary>The file in a training run folder that names its latest checkpoint.</summary>
    public const string RunPointerFileName = "latest.json";

    /// <summary>The checkpoint folder name a run pointer holds: a plain name inside <c>checkpoints/</c>, never a path.</summary>
    public static string CheckpointNamedBy(string pointer)
    {
        string? checkpoint;
        try
        {
            using var document = JsonDocument.Parse(ConfigFields.ReadText(pointer), ConfigFields.Strict);
            checkpoint = document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("checkpoint", out var name)
                && name.ValueKind == JsonValueKind.String ? name.GetString() : null;
        }
        catch (JsonException e) { throw new InvalidDataException($"{pointer}: not a run pointer ({e.Message})", e); }
        if (checkpoint is null || !PathNames.IsPlainFileName(checkpoint))
            throw new InvalidDataException($"{pointer}: 'checkpoint' must name a folder inside checkpoints/ (got {(checkpoint is null ? "none" : $"'{checkpoint}'")})");
        return checkpoint;
    }

    /// <summary>
    /// The directory's configuration, checked before anything is built: every field known, present and of its type,
    /// every value within its bounds (<see cref="ModelSpec.Validate"/>), and the sizes against the tensors
    /// weights.safetensors holds (<see cref="ModelShapes.Check"/>), so a configuration its weights do not bear out is
    /// refused by name, not allocated. Errors are InvalidDataExceptions naming the file and the field.
    /// </summary>
    public static ModelSpec ReadSpec(string directory)
    {
        directory = Locate(directory);
        var (spec, weights) = ReadChecked(directory);
        weights.Dispose();
        return spec;
    }

    /// <summary>The model (any kind) with its weights loaded strictly.</summary>
    public static (ModelSpec Spec, nn.Module Model) Load(string directory)
    {
        directory = Locate(directory);
        var (spec, weights) = ReadChecked(directory);
        using var _ = weights;
        var model = ModelCatalog.Build(spec);
        try
        {
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
        // The file is checked against the configuration it was saved with; the resampled model differs from it only in position tables.
        var (spec, weights) = ReadChecked(directory);
        using var _ = weights;
        if (spec.Kind != ModelKind.Vit)
            throw new InvalidDataException($"{Path.Combine(directory, ConfigFileName)}: '{spec.Architecture}' is a {spec.Kind.ToString().ToLowerInvariant()} model, not a ViT");
        var config = imageSize is int size ? spec.Config! with { ImgSize = size } : spec.Config!;
        if (config.Problem() is var (field, reason)) throw new ArgumentException($"image size {imageSize}: {field} {reason}");
        var model = new VisionTransformer(config);
        try
        {
            WeightLoader.LoadStrict(model, weights, resamplePositions: imageSize is not null);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return (spec with { Config = config }, model);
    }

    /// <summary>config.json checked in full and the open weights file it was checked against (the caller disposes it).</summary>
    private static (ModelSpec Spec, SafetensorsFile Weights) ReadChecked(string directory)
    {
        var (spec, root, derived) = ReadConfig(directory);
        var weights = OpenWeights(directory);
        try
        {
            CheckWeights(directory, spec, weights);
            CheckDerived(Path.Combine(directory, ConfigFileName), spec, root, derived);
            return (spec, weights);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private static SafetensorsFile OpenWeights(string directory)
    {
        string path = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(path)) throw new InvalidDataException($"{path}: missing: a model directory holds config.json and {WeightsFileName}");
        try
        {
            return SafetensorsFile.Open(path);
        }
        catch (SafetensorsFormatException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    private static void CheckWeights(string directory, ModelSpec spec, SafetensorsFile weights) =>
        ModelShapes.Check(spec, new SafetensorsTensors(weights), Path.Combine(directory, ConfigFileName), spec.Kind switch
        {
            ModelKind.Vqkd => "vqkd.",
            ModelKind.Dvae => "dvae.",
            _ => "config.",
        });

    /// <summary>config.json as a spec whose fields, types and bounds are checked; its JSON and the derived fields it holds.</summary>
    private static (ModelSpec Spec, JsonObject Root, List<string> Derived) ReadConfig(string directory)
    {
        string configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath}: not a model directory (config.json missing)", configPath);
        string text = ConfigFields.ReadText(configPath);
        if (TimmHub.IsHubConfig(text))
            throw new InvalidDataException($"{configPath}: a timm hub folder, not a MimFlow model directory: import it with 'mimflow model import --from timm --weights {directory}'");
        var root = ConfigFields.ParseObject(configPath, text, "a model configuration");
        var derived = new List<string>();
        ConfigFields.Check(root, Json.GetTypeInfo(typeof(ModelSpec)), Json, configPath, "", derived);
        ModelSpec spec;
        try
        {
            spec = root.Deserialize<ModelSpec>(Json) ?? throw new InvalidDataException($"{configPath}: empty configuration");
        }
        catch (JsonException e)
        {
            // The field walk checks every type first; this is a backstop naming the field all the same.
            throw new InvalidDataException($"{configPath}: {e.Path?.TrimStart('$', '.') ?? "a field"}: not a model configuration ({e.Message})", e);
        }
        spec.Validate(configPath);
        return (spec, root, derived);
    }

    /// <summary>
    /// Values derived from others (grid_size, head_dim, kind …) are written for readers and ignored when read; one that
    /// disagrees with the fields it derives from marks an edited or damaged file, so it is refused by name. Checked
    /// after the weights, whose message says more when a size was edited.
    /// </summary>
    private static void CheckDerived(string configPath, ModelSpec spec, JsonObject root, List<string> derived)
    {
        var written = JsonSerializer.SerializeToNode(spec, Json)!;
        foreach (string path in derived)
        {
            var given = ConfigFields.At(root, path);
            var computed = ConfigFields.At(written, path);
            if (!JsonNode.DeepEquals(given, computed))
                throw new InvalidDataException($"{configPath}: {path} is {given?.ToJsonString() ?? "null"}, but the other fields give {computed?.ToJsonString() ?? "null"}");
        }
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
