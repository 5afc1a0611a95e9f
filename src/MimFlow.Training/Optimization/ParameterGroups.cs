using System.Collections.Frozen;
using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;

namespace MimFlow.Training.Optimization;

/// <summary>A trainable parameter with its name in the module (prefixes included), as <c>named_parameters()</c> gives it.</summary>
public readonly record struct NamedParameter(string Name, Parameter Parameter);

/// <summary>
/// One optimiser parameter group, BEiT's <c>{"params", "weight_decay", "lr_scale"}</c>: whether the (scheduled)
/// weight decay applies, and the factor on the (scheduled) learning rate from layer-wise decay.
/// </summary>
/// <param name="Name">BEiT's group name: <c>decay</c> / <c>no_decay</c>, or <c>layer_{id}_decay</c> with layer decay.</param>
/// <param name="LayerId">BEiT's layer id (0 = embeddings, depth + 1 = final norm and heads); null without layer decay.</param>
public sealed record ParameterGroup(string Name, IReadOnlyList<NamedParameter> Parameters, bool AppliesWeightDecay, double LrScale = 1.0, int? LayerId = null);

/// <summary>How <see cref="ParameterGroups.Build(IEnumerable{NamedParameter}, ParameterGroupOptions?)"/> splits parameters.</summary>
public sealed record ParameterGroupOptions
{
    /// <summary>
    /// Layer-wise learning-rate decay for fine-tuning (BEiT: 0.65 base, 0.75 large; 0.9 for short schedules): block i
    /// learns at decay^(depth − i) of the top rate. Null: one rate for all (pretraining).
    /// </summary>
    public double? LayerDecay { get; init; }

    /// <summary>Blocks in the backbone; null: counted from the names (largest <c>blocks.i</c> + 1).</summary>
    public int? Depth { get; init; }

    /// <summary>Further names kept out of weight decay: a last name segment (<c>logit_scale</c>) or a full name.</summary>
    public IReadOnlyCollection<string> ExtraNoWeightDecay { get; init; } = [];
}

/// <summary>
/// Splits a module's trainable parameters as BEiT's <c>get_parameter_groups</c> (and timm's
/// <c>param_groups_weight_decay</c> / <c>param_groups_layer_decay</c>) do, so a recipe's weight decay and layer decay
/// mean the same numbers as in the papers. Names are matched by segments rather than by their start, so a backbone
/// wrapped in an objective (<c>backbone.blocks.3…</c>, <c>encoder.cls_token</c>) is grouped as the bare backbone would be.
/// </summary>
public static class ParameterGroups
{
    /// <summary>BEiT's <c>no_weight_decay()</c> list (timm's Beit adds every relative position table), plus mask_token.</summary>
    private static readonly FrozenSet<string> NoWeightDecayNames =
        new[] { "pos_embed", "cls_token", "mask_token", "relative_position_bias_table" }.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>Parameters of the patch embedding stem: BEiT's layer 0.</summary>
    private static readonly FrozenSet<string> StemNames =
        new[] { "patch_embed", "cls_token", "mask_token", "pos_embed", "rel_pos_bias" }.ToFrozenSet(StringComparer.Ordinal);

    public static IReadOnlyList<ParameterGroup> Build(torch.nn.Module module, ParameterGroupOptions? options = null) =>
        Build(module.named_parameters().Select(p => new NamedParameter(p.name, p.parameter)), options);

    /// <summary>Groups in order of first appearance (BEiT's dict order); parameters with requires_grad false are left out.</summary>
    public static IReadOnlyList<ParameterGroup> Build(IEnumerable<NamedParameter> parameters, ParameterGroupOptions? options = null)
    {
        options ??= new ParameterGroupOptions();
        var trainable = parameters.Where(p => p.Parameter.requires_grad).ToList();
        int depth = 0;
        if (options.LayerDecay is double decay)
        {
            if (decay <= 0 || decay > 1) throw new ArgumentOutOfRangeException(nameof(options), decay, "layer decay must lie in (0, 1].");
            depth = options.Depth ?? trainable.Select(p => BlockIndex(p.Name) + 1).DefaultIfEmpty(0).Max();
            if (depth < 0) throw new ArgumentOutOfRangeException(nameof(options), depth, "depth must not be negative.");
        }
        var extra = options.ExtraNoWeightDecay.ToHashSet(StringComparer.Ordinal);
        var groups = new List<(string Name, bool Decay, int? Layer, List<NamedParameter> Members)>();
        foreach (var parameter in trainable)
        {
            bool decays = !SkipsWeightDecay(parameter.Name, parameter.Parameter.dim(), extra);
            int? layer = options.LayerDecay is null ? null : LayerId(parameter.Name, depth);
            string name = (layer is int id ? $"layer_{id.ToString(CultureInfo.InvariantCulture)}_" : "") + (decays ? "decay" : "no_decay");
            int index = groups.FindIndex(g => g.Name == name);
            if (index < 0)
            {
                groups.Add((name, decays, layer, []));
                index = groups.Count - 1;
            }
            groups[index].Members.Add(parameter);
        }
        return groups.Select(g => new ParameterGroup(g.Name, g.Members, g.Decay,
            g.Layer is int id ? LayerScale(id, depth, options.LayerDecay!.Value) : 1.0, g.Layer)).ToList();
    }

    /// <summary>
    /// BEiT and timm: no decay for 1-D (and 0-D) parameters (norms, biases, <c>q_bias</c>/<c>v_bias</c>, LayerScale
    /// gammas), any <c>*.bias</c>, and the no_weight_decay list (position embeddings, tokens, relative position tables),
    /// since shrinking them towards zero only fights their role. The gammas are also listed by name so a reshaped
    /// LayerScale is still spared.
    /// </summary>
    public static bool SkipsWeightDecay(string name, long dimensions, IReadOnlySet<string>? extra = null)
    {
        string last = LastSegment(name);
        return dimensions <= 1
            || last is "bias" or "q_bias" or "v_bias" or "gamma_1" or "gamma_2"
            || (last == "gamma" && SecondLastSegment(name).StartsWith("ls", StringComparison.Ordinal))
            || NoWeightDecayNames.Contains(last)
            || (extra is not null && (extra.Contains(last) || extra.Contains(name)));
    }

    /// <summary>
    /// BEiT's layer id for layer decay: the stem (<c>patch_embed</c>, <c>cls_token</c>, <c>mask_token</c>,
    /// <c>pos_embed</c>, shared <c>rel_pos_bias</c>) 0, <c>blocks.i</c> i + 1, everything else (final norms, heads)
    /// depth + 1. The first of these segments in the name decides, so a prefix (<c>backbone.</c>) is passed over.
    /// The shared relative position bias goes with the stem as in timm's Beit group matcher; BEiT's own
    /// <c>get_num_layer_for_vit</c> put it at the top, which matters only for shared-bias fine-tuning.
    /// </summary>
    public static int LayerId(string name, int depth)
    {
        string[] segments = name.Split('.');
        for (int i = 0; i < segments.Length; i++)
        {
            if (StemNames.Contains(segments[i])) return 0;
            if (segments[i] == "blocks" && i + 1 < segments.Length && int.TryParse(segments[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int block))
                return block + 1;
        }
        return depth + 1;
    }

    /// <summary>BEiT's <c>LayerDecayValueAssigner</c>: decay^(depth + 1 − layer), so the heads keep the full rate.</summary>
    public static double LayerScale(int layerId, int depth, double decay) => Math.Pow(decay, depth + 1 - layerId);

    private static int BlockIndex(string name)
    {
        string[] segments = name.Split('.');
        for (int i = 0; i + 1 < segments.Length; i++)
            if (segments[i] == "blocks" && int.TryParse(segments[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int block))
                return block;
        return -1;
    }

    private static string LastSegment(string name) => name[(name.LastIndexOf('.') + 1)..];

    private static string SecondLastSegment(string name)
    {
        int last = name.LastIndexOf('.');
        if (last <= 0) return "";
        return LastSegment(name[..last]);
    }
}
