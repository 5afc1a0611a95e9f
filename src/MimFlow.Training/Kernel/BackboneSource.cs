using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using static TorchSharp.torch;

namespace MimFlow.Training.Kernel;

/// <summary>The model a run starts from: an architecture name (random initialisation) or a model directory.</summary>
/// <param name="Spec">Its ViT configuration, at the run's input size.</param>
/// <param name="Directory">The model directory holding its weights; null for an architecture name.</param>
public sealed record ResolvedBackbone(string Model, ModelSpec Spec, string? Directory)
{
    public VitConfig Config => Spec.Config!;
}

/// <summary>Which of a run's tensors come from the source model.</summary>
/// <param name="Purpose">What the backbone becomes, for messages ("classifier", "segmentation backbone", …).</param>
/// <param name="NotCopied">Name prefixes of the run's tensors never taken from the source (a new head).</param>
/// <param name="MayBeMissing">Name prefixes the source may lack: those tensors keep their initialisation (a final
/// norm a token-pooled model did not have, a mask token a fine-tuned model dropped).</param>
public sealed record BackboneTransfer(string Purpose, IReadOnlyList<string> NotCopied, IReadOnlyList<string> MayBeMissing);

/// <summary>
/// How every trainer (pretraining, fine-tuning, linear probing, segmentation) turns its <c>--model</c> into a backbone:
/// the name resolves to a ViT configuration at the run's input size, the run shapes its own configuration from it
/// (pooling, head, mask token, drop path), initialises, then copies the source's weights by name. Position tables
/// are resampled when the input size changes; a shared relative position table seeds every block's own table, as
/// BEiT's fine-tuning does; the non-persistent relative position indices are never copied.
/// </summary>
public static class BackboneSource
{
    public static ResolvedBackbone Resolve(string model, string purpose, int? imageSize = null)
    {
        ModelSpec spec;
        string? directory = null;
        if (Directory.Exists(model))
        {
            directory = ModelDirectory.Locate(model);
            spec = ModelDirectory.ReadSpec(directory);
            if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"{model}: a {spec.Kind.ToString().ToLowerInvariant()} model cannot be a {purpose}");
        }
        else
        {
            if (model.Contains('/') || model.Contains('\\')) throw new ArgumentException($"{model}: neither a model directory nor an architecture name");
            spec = ModelCatalog.Spec(model);
            if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"{model}: not a ViT architecture, so not a {purpose}");
        }
        if (imageSize is int size)
        {
            if (size < 1 || size % spec.Config!.PatchSize != 0)
                throw new ArgumentException($"the input size {size} is not a positive multiple of {model}'s patch size {spec.Config!.PatchSize}");
            spec = spec with { Config = spec.Config with { ImgSize = size } };
        }
        return new ResolvedBackbone(model, spec, directory);
    }

    /// <summary>Copies the source's weights into <paramref name="target"/> by name; nothing happens for an architecture name.</summary>
    public static void CopyWeights(ResolvedBackbone source, VisionTransformer target, BackboneTransfer transfer)
    {
        if (source.Directory is null) return;
        const string sharedTable = "rel_pos_bias.relative_position_bias_table";
        var stored = ModelDirectory.ReadSpec(source.Directory).Config!;
        var (_, loaded) = ModelDirectory.LoadVit(source.Directory, target.Config.ImgSize == stored.ImgSize ? null : target.Config.ImgSize);
        using (loaded)
        {
            var from = loaded.state_dict();
            using var noGrad = no_grad();
            foreach (var (name, destination) in target.state_dict())
            {
                if (name.EndsWith("relative_position_index", StringComparison.Ordinal) || StartsWithAny(name, transfer.NotCopied)) continue;
                Tensor? value = from.TryGetValue(name, out var same) ? same
                    : name.EndsWith("attn.relative_position_bias_table", StringComparison.Ordinal) && from.TryGetValue(sharedTable, out var shared) ? shared
                    : null;
                if (value is null)
                {
                    if (StartsWithAny(name, transfer.MayBeMissing)) continue;
                    throw new InvalidDataException($"{source.Model}: '{name}' is missing for the {transfer.Purpose}");
                }
                if (!value.shape.SequenceEqual(destination.shape))
                    throw new InvalidDataException($"{source.Model}: '{name}' has shape [{string.Join(", ", value.shape)}], the {transfer.Purpose} expects [{string.Join(", ", destination.shape)}]");
                destination.copy_(value);
            }
        }
    }

    private static bool StartsWithAny(string name, IReadOnlyList<string> prefixes) => prefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal));
}
