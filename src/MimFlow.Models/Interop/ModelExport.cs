namespace MimFlow.Models.Interop;

/// <summary>What <c>mimflow model export</c> does.</summary>
/// <param name="To">The target layout: one of <see cref="Targets"/>.</param>
/// <param name="Model">The model directory (or a training run folder standing for its latest backbone).</param>
/// <param name="OutputDirectory">The folder to write.</param>
public sealed record ModelExportRequest(string To, string Model, string OutputDirectory)
{
    public static IReadOnlyList<string> Targets { get; } = ["timm"];
}

/// <param name="Architecture">The timm architecture name config.json names.</param>
/// <param name="ModelArgs">The constructor arguments config.json adds to that name's (empty when the name is exact).</param>
/// <param name="Files">The files written, in the folder.</param>
public sealed record ModelExportResult(ModelSpec Spec, string Architecture, IReadOnlyDictionary<string, object?> ModelArgs, IReadOnlyList<string> Files,
    string Directory, IReadOnlyList<string> Notes);

/// <summary>Writes a model directory in another library's layout.</summary>
public static class ModelExport
{
    /// <summary>
    /// timm: the hub layout (<see cref="TimmHub.Write"/>): <c>timm.create_model('local-dir:OUT', pretrained=True)</c>
    /// (or <c>create_model(architecture, pretrained=True, pretrained_cfg_overlay=dict(file='OUT/model.safetensors',
    /// num_classes=K, input_size=(3, S, S)), **model_args)</c>) builds the same network and loads the weights strictly;
    /// <c>mimflow model import --from timm --weights OUT</c> reads it back byte for byte.
    /// </summary>
    public static ModelExportResult Run(ModelExportRequest request)
    {
        var targets = ModelExportRequest.Targets;
        if (!targets.Contains(request.To)) throw new ArgumentException($"unknown export target '{request.To}' ({string.Join(", ", targets)})");
        if (OutputProblem(request) is string problem) throw new ArgumentException($"{request.OutputDirectory}: {problem}");
        var (spec, network) = ModelDirectory.LoadVit(request.Model);
        using (network)
        {
            var written = TimmHub.Write(request.OutputDirectory, spec.Config!, network, ModelDirectory.ReadLabels(request.Model));
            return new ModelExportResult(spec, written.Architecture, written.ModelArgs, written.Files, request.OutputDirectory, written.Notes);
        }
    }

    /// <summary>
    /// Why the output folder would overwrite the model being exported, or null: it is the model directory, lies inside
    /// it, or is the folder given as the model (a run folder, which a config.json would turn into a model directory).
    /// </summary>
    public static string? OutputProblem(ModelExportRequest request)
    {
        string located = ModelDirectory.Locate(request.Model);
        if (OutputGuard.IsWithin(request.OutputDirectory, located))
            return $"is {(OutputGuard.Same(request.OutputDirectory, located) ? "" : "inside ")}the model directory being exported ({located}); its config.json and weights would be overwritten";
        if (OutputGuard.Same(request.OutputDirectory, request.Model))
            return $"is the folder given as the model ({request.Model}); writing config.json there would replace what it points to";
        return null;
    }
}
