using MimFlow.Models.Interop.Checkpoints;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>What <c>mimflow model import</c> does; the defaults live here.</summary>
/// <param name="From">The naming scheme of the checkpoint: timm or one of <see cref="ForeignCheckpoints.Formats"/>.</param>
/// <param name="Weights">The weights file (its format is detected from its content).</param>
/// <param name="OutputDirectory">The model directory to write.</param>
public sealed record ModelImportRequest(string From, string Weights, string OutputDirectory)
{
    /// <summary>timm: the constructor arguments (timm_config.json).</summary>
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
public sealed record ModelImportResult(ModelSpec Spec, string Format, int Tensors, long Parameters, IReadOnlyList<string> LeftOut, string Directory);

/// <summary>Imports a checkpoint into a model directory, strictly: every tensor is loaded or listed as left out.</summary>
public static class ModelImport
{
    public static ModelImportResult Run(ModelImportRequest request)
    {
        using var file = CheckpointFile.Open(request.Weights, new CheckpointReadOptions(request.StateDictKey));
        ForeignCheckpoint checkpoint;
        if (request.From == "timm")
        {
            string configPath = request.Config ?? throw new ArgumentException("--from timm needs --config timm_config.json");
            var vit = TimmConfig.Parse(File.ReadAllText(configPath), configPath);
            checkpoint = new ForeignCheckpoint(new ModelSpec(vit.BeitAttention ? "beit" : "vit", Config: vit), file, []);
        }
        else checkpoint = ForeignCheckpoints.Read(request.From, file, request.Heads);

        var spec = checkpoint.Spec;
        if (request.ImageSize is int size)
        {
            if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"--img-size applies to ViTs, not a {spec.Kind.ToString().ToLowerInvariant()} model");
            spec = spec with { Config = spec.Config! with { ImgSize = size } };
        }
        using var network = ModelCatalog.Build(spec);
        WeightLoader.LoadStrict(network, checkpoint.Tensors, resamplePositions: request.ImageSize is not null);
        ModelDirectory.Save(request.OutputDirectory, spec, network);
        return new ModelImportResult(spec, file.Format, network.state_dict().Count, network.parameters().Sum(p => p.numel()),
            [.. file.LeftOut, .. checkpoint.LeftOut], request.OutputDirectory);
    }
}
