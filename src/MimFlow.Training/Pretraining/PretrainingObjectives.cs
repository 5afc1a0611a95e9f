using MimFlow.Models.Backbones;
using MimFlow.Shards;
using MimFlow.Training.Objectives;

namespace MimFlow.Training.Pretraining;

/// <summary>What an objective trains from.</summary>
public enum ObjectiveSource
{
    /// <summary>Pre-tokenized shards through the shard feeder (<see cref="IShardObjective"/>).</summary>
    Shards,

    /// <summary>Multi-crop views straight from the data pipeline (<see cref="IMultiCropObjective"/>).</summary>
    Dataset,
}

/// <summary>What building an objective may read: the run's request and, for shard objectives, the set's manifest.</summary>
internal sealed record ObjectiveSetup(PretrainRequest Request, ShardManifest? Manifest)
{
    public int CodebookSize => Manifest is { CodebookSize: > 0 } manifest ? manifest.CodebookSize
        : throw new ArgumentException($"{Request.Objective} needs shards with codes (tokenize --tokenizer)");

    public int FeatureDim => Manifest?.FeatureShape?[1]
        ?? throw new ArgumentException($"{Request.Objective} needs shards with teacher features (tokenize --teacher)");
}

/// <summary>One pretraining method: its name, what it trains from, and how it is built over a backbone.</summary>
public sealed record ObjectiveEntry(string Name, ObjectiveSource Source, string Summary)
{
    internal Func<VisionTransformer, ObjectiveSetup, IMimObjective> Create { get; init; } = (_, _) => throw new InvalidOperationException("an objective entry without a constructor");
}

/// <summary>Every pretraining objective by name: the one place that knows them. The loop asks the objective itself
/// for everything else (β2, low precision, its hooks).</summary>
public static class PretrainingObjectives
{
    public static IReadOnlyList<ObjectiveEntry> All { get; } =
    [
        new("beit", ObjectiveSource.Shards, "BEiT: the tokenizer's codes at the masked patches (cross-entropy)")
        {
            Create = (backbone, setup) => new BeitObjective(backbone, setup.CodebookSize),
        },
        new("beitv2", ObjectiveSource.Shards, "BEiT v2: VQ-KD codes at the masked patches, with patch aggregation")
        {
            Create = (backbone, setup) => new BeitV2Objective(backbone, new BeitV2Options { CodebookSize = setup.CodebookSize }),
        },
        new("maskdistill", ObjectiveSource.Shards, "MaskDistill: smooth-L1 to the teacher's LayerNorm'd features at the masked patches")
        {
            Create = (backbone, setup) => new MaskDistillObjective(backbone, setup.FeatureDim),
        },
        new("ibot", ObjectiveSource.Dataset, "iBOT: online EMA teacher, [CLS] and masked-patch self-distillation over multi-crop views")
        {
            Create = (backbone, _) => new IbotObjective(backbone),
        },
    ];

    public static IReadOnlyList<string> Names { get; } = All.Select(e => e.Name).ToList();

    public static ObjectiveEntry Find(string name) =>
        All.FirstOrDefault(e => e.Name == name) ?? throw new ArgumentException($"unknown objective '{name}' ({string.Join(", ", Names)})");
}
