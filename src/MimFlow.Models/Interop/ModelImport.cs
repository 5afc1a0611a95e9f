using MimFlow.Models.Interop.Checkpoints;

namespace MimFlow.Models.Interop;

/// <summary>What <c>mimflow model import</c> does; the defaults live here.</summary>
/// <param name="From">The naming scheme of the checkpoint: timm or one of <see cref="ForeignCheckpoints.Formats"/>.</param>
/// <param name="Weights">
/// The weights file (its format is detected from its content), or, for timm and hf-*, a hub folder: timm's
/// (config.json with an architecture + model.safetensors) or transformers' (config.json + model.safetensors or
/// pytorch_model.bin).
/// </param>
/// <param name="OutputDirectory">The model directory to write.</param>
public sealed record ModelImportRequest(string From, string Weights, string OutputDirectory)
{
    /// <summary>timm with a lone weights file: the constructor arguments (timm_config.json).</summary>
    public string? Config { get; init; }

    /// <summary>Attention heads, where the checkpoint does not tell.</summary>
    public int? Heads { get; init; }

    /// <summary>Build the ViT for this input size, resampling position tables.</summary>
    public int? ImageSize { get; init; }

    /// <summary>Pickled checkpoints: the entry holding the state dict (<c>a/b</c> when nested), instead of the unwrap rules.</summary>
    public string? StateDictKey { get; init; }

    public static IReadOnlyList<string> Schemes { get; } = ["timm", .. ForeignCheckpoints.Formats];
}

/// <param name="LeftOut">Entries of the file not imported: tensors that are not part of the model and non-tensor state.</param>
public sealed record ModelImportResult(ModelSpec Spec, string Format, int Tensors, long Parameters, IReadOnlyList<string> LeftOut, string Directory)
{
    /// <summary>The source's architecture name where it has one (a timm hub folder's).</summary>
    public string? SourceArchitecture { get; init; }

    /// <summary>Label names written beside the model (labels.json), where the checkpoint named its classes.</summary>
    public IReadOnlyList<string>? Labels { get; init; }

    /// <summary>What the import wants the user to know (a timm naming quirk, a parameter made because the source has none).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>Imports a checkpoint into a model directory, strictly: every tensor is loaded or listed as left out.</summary>
public static class ModelImport
{
    public static ModelImportResult Run(ModelImportRequest request)
    {
        if (OutputProblem(request) is string problem) throw new ArgumentException($"{request.OutputDirectory}: {problem}");
        var (weightsPath, hub, huggingFace) = Locate(request);
        using var file = CheckpointFile.Open(weightsPath, new CheckpointReadOptions(request.StateDictKey));
        ForeignCheckpoint checkpoint;
        // Where the configuration came from: a refusal names that file (and the weights).
        string configSource;
        if (request.From == "timm")
        {
            if (hub is not null)
            {
                configSource = Path.Combine(request.Weights, TimmHub.ConfigFileName);
                checkpoint = new ForeignCheckpoint(new ModelSpec(hub.Config.BeitAttention ? "beit" : "vit", Config: hub.Config), file, [])
                {
                    Labels = hub.Labels, Notes = hub.Notes,
                };
            }
            else
            {
                configSource = request.Config ?? throw new ArgumentException(
                    "--from timm needs --config timm_config.json with a weights file, or --weights naming a timm hub folder (config.json + model.safetensors)");
                var vit = TimmConfig.Parse(ConfigFields.ReadText(configSource), configSource);
                checkpoint = new ForeignCheckpoint(new ModelSpec(vit.BeitAttention ? "beit" : "vit", Config: vit), file, []);
            }
        }
        else
        {
            configSource = huggingFace?.Path ?? file.Origin;
            checkpoint = ForeignCheckpoints.Read(request.From, file, request.Heads, huggingFace);
        }

        // Bounds, then the configuration against the tensors' names and shapes, before any module is built.
        checkpoint.Spec.Validate(configSource);
        ModelShapes.Check(checkpoint.Spec, checkpoint.Tensors, configSource, "");
        var spec = checkpoint.Spec;
        if (request.ImageSize is int size)
        {
            if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"--img-size applies to ViTs, not a {spec.Kind.ToString().ToLowerInvariant()} model");
            spec = spec with { Config = spec.Config! with { ImgSize = size } };
            if (spec.Config.Problem() is var (field, reason)) throw new ArgumentException($"--img-size {size}: {field} {reason}");
        }
        var labels = checkpoint.Labels;
        if (labels is not null && labels.Count != (spec.Config?.NumClasses ?? 0))
            throw new InvalidDataException($"{(hub is not null ? Path.Combine(request.Weights, TimmHub.ConfigFileName) : huggingFace?.Path ?? request.Weights)}: " +
                                           $"{labels.Count} label names for a head of {spec.Config?.NumClasses ?? 0} classes");
        using var network = ModelCatalog.Build(spec);
        WeightLoader.LoadStrict(network, checkpoint.Tensors, resamplePositions: request.ImageSize is not null);
        ModelDirectory.Save(request.OutputDirectory, spec, network);
        // A stale labels.json from an earlier import into the same folder must not outlive it.
        string labelsPath = Path.Combine(request.OutputDirectory, ModelDirectory.LabelsFileName);
        if (labels is not null) ModelDirectory.WriteLabels(request.OutputDirectory, labels);
        else if (File.Exists(labelsPath)) File.Delete(labelsPath);
        return new ModelImportResult(spec, file.Format, network.state_dict().Count, network.parameters().Sum(p => p.numel()),
            [.. file.LeftOut, .. checkpoint.LeftOut], request.OutputDirectory)
        {
            SourceArchitecture = hub?.Architecture, Labels = labels, Notes = checkpoint.Notes,
        };
    }

    /// <summary>
    /// Why the output folder would overwrite an input, or null: it is the --weights folder, or holds the weights file,
    /// the hub folder's config.json or the --config file (an import writes config.json and weights.safetensors there).
    /// </summary>
    public static string? OutputProblem(ModelImportRequest request)
    {
        string output = request.OutputDirectory;
        if (Directory.Exists(request.Weights) && OutputGuard.Same(output, request.Weights))
            return $"is the folder being imported ({request.Weights}); its files would be overwritten";
        foreach (string? input in new[] { request.Weights, request.Config })
            if (input is not null && File.Exists(input) && (OutputGuard.Same(output, Path.GetDirectoryName(Path.GetFullPath(input))!) || OutputGuard.Same(output, input)))
                return $"holds an input of the import ({input}); writing the model there could overwrite it";
        return null;
    }

    /// <summary>The weights file of the request, and the folder's configuration where --weights names a hub folder.</summary>
    private static (string Weights, TimmHubModel? Hub, HuggingFaceConfig? HuggingFace) Locate(ModelImportRequest request)
    {
        if (request.Config is not null && request.From != "timm") throw new ArgumentException($"--config applies to --from timm, not {request.From}");
        if (!Directory.Exists(request.Weights)) return (request.Weights, null, null);
        if (request.From == "timm")
        {
            if (request.Config is not null) throw new ArgumentException($"{request.Weights} is a hub folder: its config.json replaces --config");
            var hub = TimmHub.Read(request.Weights);
            return (hub.WeightsPath, hub, null);
        }
        if (ForeignCheckpoints.HuggingFaceFormats.Contains(request.From))
        {
            string configPath = Path.Combine(request.Weights, HuggingFaceConfig.FileName);
            var config = File.Exists(configPath) ? HuggingFaceConfig.Load(configPath) : null;
            return (TimmHub.WeightsIn(request.Weights), null, config);
        }
        throw new ArgumentException($"{request.Weights} is a folder: --from {request.From} takes a weights file (folders: timm, {string.Join(", ", ForeignCheckpoints.HuggingFaceFormats)})");
    }
}
