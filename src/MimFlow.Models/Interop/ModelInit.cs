using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>What <c>mimflow model init</c> writes: a named architecture, optionally reshaped (the demo's small models, experiments).</summary>
public sealed record ModelInitRequest(string Architecture, string OutputDirectory)
{
    public long Seed { get; init; }

    /// <summary>Classification head size for ViTs (0: none).</summary>
    public int Classes { get; init; }

    public int? ImageSize { get; init; }
    public int? PatchSize { get; init; }
    public int? EmbedDim { get; init; }
    public int? Depth { get; init; }
    public int? NumHeads { get; init; }

    public bool Reshaped => ImageSize is not null || PatchSize is not null || EmbedDim is not null || Depth is not null || NumHeads is not null;
}

public sealed record ModelInitResult(ModelSpec Spec, long Parameters, string Directory);

/// <summary>A randomly initialised model directory: the architecture's reference initialisation, seeded (same seed, same bytes).</summary>
public static class ModelInit
{
    public static ModelInitResult Run(ModelInitRequest request)
    {
        var spec = ModelCatalog.Spec(request.Architecture, request.Classes);
        VitConfig Reshape(VitConfig config) => config with
        {
            ImgSize = request.ImageSize ?? config.ImgSize, PatchSize = request.PatchSize ?? config.PatchSize, EmbedDim = request.EmbedDim ?? config.EmbedDim,
            Depth = request.Depth ?? config.Depth, NumHeads = request.NumHeads ?? config.NumHeads,
        };
        if (request.Reshaped)
            spec = spec.Kind switch
            {
                ModelKind.Vit => spec with { Config = Reshape(spec.Config!) },
                ModelKind.Vqkd => spec with { Vqkd = spec.Vqkd! with { Encoder = Reshape(spec.Vqkd!.Encoder) } },
                _ => throw new ArgumentException($"{spec.Architecture}: the shape options apply to ViTs and VQ-KD encoders only"),
            };
        (spec.Config ?? spec.Vqkd?.Encoder)?.Validate();
        using var network = ModelCatalog.Create(spec, request.Seed);
        ModelDirectory.Save(request.OutputDirectory, spec, network);
        return new ModelInitResult(spec, network.parameters().Sum(p => p.numel()), request.OutputDirectory);
    }
}
