using System.Globalization;
using MimFlow.Models.Backbones;
using MimFlow.Models.Tokenizers;

namespace MimFlow.Models.Interop;

/// <summary>
/// The state dict a configuration builds (names and shapes), computed without building it, and the check of a weights
/// file against it. Run before any module exists, it bounds every size by what the file actually holds: a config.json
/// claiming a billion blocks is refused for the two blocks its weights have instead of allocating them. The test
/// <c>The_expected_shapes_of_a_configuration_are_the_state_dict_of_the_module_it_builds</c> keeps these shapes and
/// the modules in step.
/// </summary>
public static class ModelShapes
{
    /// <summary>Parameter and persistent buffer names → shapes, in the modules' registration order.</summary>
    public static IReadOnlyDictionary<string, long[]> Of(ModelSpec spec)
    {
        var shapes = new OrderedShapes();
        switch (spec.Kind)
        {
            case ModelKind.Vqkd:
                var vqkd = spec.Vqkd!;
                long dim = vqkd.Encoder.EmbedDim;
                Vit(shapes, "encoder.", vqkd.Encoder with { NumClasses = 0 });
                Vit(shapes, "decoder.", vqkd.Decoder);
                shapes.Linear("encode_task_layer.0", dim, dim);
                shapes.Linear("encode_task_layer.2", dim, vqkd.CodeDim);
                shapes.Linear("decode_task_layer.0", dim, dim);
                shapes.Linear("decode_task_layer.2", dim, vqkd.TeacherDim);
                shapes.Add("quantize.embedding.weight", vqkd.Codes, vqkd.CodeDim);
                shapes.Add("quantize.cluster_size", vqkd.Codes);
                break;
            case ModelKind.Dvae:
                Dvae(shapes, spec.Dvae!);
                break;
            default:
                Vit(shapes, "", spec.Config!);
                break;
        }
        return shapes.Result;
    }

    /// <summary>The number of values the configuration's state dict holds (checked arithmetic).</summary>
    public static long ElementCount(ModelSpec spec) => Of(spec).Values.Aggregate(0L, (sum, shape) => checked(sum + shape.Aggregate(1L, (a, b) => checked(a * b))));

    /// <summary>
    /// Refuses weights whose names or shapes are not exactly those <paramref name="spec"/> builds, with one message
    /// naming <paramref name="configSource"/>, the configuration field that disagrees where one can be told (its
    /// name after <paramref name="fieldPrefix"/>, as the configuration file spells it), and the weights file.
    /// </summary>
    public static void Check(ModelSpec spec, INamedTensors weights, string configSource, string fieldPrefix)
    {
        var expected = Of(spec);
        var missing = expected.Keys.Where(k => !weights.Contains(k)).ToList();
        var unexpected = weights.Names.Where(n => !expected.ContainsKey(n)).ToList();
        var wrong = expected.Where(e => weights.Contains(e.Key) && !weights.ShapeOf(e.Key).SequenceEqual(e.Value)).ToList();
        if (missing.Count == 0 && unexpected.Count == 0 && wrong.Count == 0) return;
        var parts = new List<string>();
        if (missing.Count > 0 || unexpected.Count > 0) parts.Add($"names do not match: missing [{Listed(missing)}], unexpected [{Listed(unexpected)}]");
        if (wrong.Count > 0)
        {
            var (name, shape) = wrong[0];
            parts.Add($"'{name}' is [{string.Join(", ", weights.ShapeOf(name))}] there, [{string.Join(", ", shape)}] by the configuration" +
                      (wrong.Count > 1 ? $" (and {wrong.Count - 1} more shapes differ)" : ""));
        }
        string field = Diagnose(spec, weights, fieldPrefix) ?? "the configuration does not describe its weights";
        throw new InvalidDataException($"{configSource}: {field}: {weights.Origin} does not hold that model ({string.Join("; ", parts)})");
    }

    private static void Vit(OrderedShapes shapes, string p, VitConfig c)
    {
        long d = c.EmbedDim, heads = c.NumHeads, hidden = (int)(c.EmbedDim * c.MlpRatio);
        long table = RelativePositionBias.TableSize(c.GridSize, c.GridSize);
        shapes.Add(p + "patch_embed.proj.weight", d, c.InChannels, c.PatchSize, c.PatchSize);
        if (!c.PreNorm) shapes.Add(p + "patch_embed.proj.bias", d);
        shapes.Add(p + "cls_token", 1, 1, d);
        if (c.UseMaskToken) shapes.Add(p + "mask_token", 1, 1, d);
        if (c.UseAbsPosEmb) shapes.Add(p + "pos_embed", 1, c.NumPatches + 1, d);
        if (c.UseSharedRelPosBias) shapes.Add(p + "rel_pos_bias.relative_position_bias_table", table, heads);
        if (c.PreNorm) shapes.Norm(p + "norm_pre", d);
        for (int i = 0; i < c.Depth; i++)
        {
            string b = $"{p}blocks.{i}.";
            shapes.Norm(b + "norm1", d);
            shapes.Add(b + "attn.qkv.weight", 3 * d, d);
            if (!c.BeitAttention && c.QkvBias) shapes.Add(b + "attn.qkv.bias", 3 * d);
            if (c.BeitAttention && c.QkvBias)
            {
                shapes.Add(b + "attn.q_bias", d);
                shapes.Add(b + "attn.v_bias", d);
            }
            if (c.UseRelPosBias) shapes.Add(b + "attn.relative_position_bias_table", table, heads);
            shapes.Linear(b + "attn.proj", d, d);
            shapes.Norm(b + "norm2", d);
            shapes.Linear(b + "mlp.fc1", d, hidden);
            shapes.Linear(b + "mlp.fc2", hidden, d);
            if (c.InitValues is not null && c.BeitAttention)
            {
                shapes.Add(b + "gamma_1", d);
                shapes.Add(b + "gamma_2", d);
            }
            else if (c.InitValues is not null)
            {
                shapes.Add(b + "ls1.gamma", d);
                shapes.Add(b + "ls2.gamma", d);
            }
        }
        shapes.Norm(p + (c.UsesAveragePool ? "fc_norm" : "norm"), d);
        if (c.NumClasses > 0) shapes.Linear(p + "head", d, c.NumClasses);
    }

    private static void Dvae(OrderedShapes shapes, DalleEncoderConfig c)
    {
        void Conv(string name, long input, long output, long kernel)
        {
            shapes.Add(name + ".w", output, input, kernel, kernel);
            shapes.Add(name + ".b", output);
        }
        Conv("blocks.input", c.InputChannels, c.HiddenSize, 7);
        for (int group = 1; group <= c.GroupCount; group++)
        {
            long width = c.GroupWidth(group), previous = group == 1 ? c.HiddenSize : c.GroupWidth(group - 1);
            for (int block = 1; block <= c.BlocksPerGroup; block++)
            {
                string name = $"blocks.group_{group}.block_{block}.";
                long input = block == 1 ? previous : width;
                if (input != width) Conv(name + "id_path", input, width, 1);
                Conv(name + "res_path.conv_1", input, width / 4, 3);
                Conv(name + "res_path.conv_2", width / 4, width / 4, 3);
                Conv(name + "res_path.conv_3", width / 4, width / 4, 3);
                Conv(name + "res_path.conv_4", width / 4, width, 1);
            }
        }
        Conv("blocks.output.conv", c.GroupWidth(c.GroupCount), c.VocabSize, 1);
    }

    /// <summary>The configuration field whose value the weights contradict, in words, or null where no single one can be told.</summary>
    private static string? Diagnose(ModelSpec spec, INamedTensors weights, string f)
    {
        switch (spec.Kind)
        {
            case ModelKind.Vqkd:
                var vqkd = spec.Vqkd!;
                if (DiagnoseVit(vqkd.Encoder with { NumClasses = 0 }, weights, "encoder.", f + "encoder.") is string encoder) return encoder;
                if (Shape(weights, "quantize.embedding.weight") is [var codes, var codeDim])
                {
                    if (codes != vqkd.Codes) return $"{f}codes is {vqkd.Codes}, but quantize.embedding.weight has {codes} codes";
                    if (codeDim != vqkd.CodeDim) return $"{f}code_dim is {vqkd.CodeDim}, but quantize.embedding.weight has {codeDim} dimensions";
                }
                int decoderDepth = CountIndexed(weights, "decoder.blocks.");
                if (decoderDepth != vqkd.DecoderDepth) return $"{f}decoder_depth is {vqkd.DecoderDepth}, but the weights hold {decoderDepth} decoder blocks";
                if (Shape(weights, "decode_task_layer.2.weight") is [var teacher, _] && teacher != vqkd.TeacherDim)
                    return $"{f}teacher_dim is {vqkd.TeacherDim}, but decode_task_layer.2.weight has {teacher} rows";
                return null;
            case ModelKind.Dvae:
                var dvae = spec.Dvae!;
                if (Shape(weights, "blocks.input.w") is [var hiddenSize, var channels, _, _])
                {
                    if (hiddenSize != dvae.HiddenSize) return $"{f}hidden_size is {dvae.HiddenSize}, but blocks.input.w has {hiddenSize} outputs";
                    if (channels != dvae.InputChannels) return $"{f}input_channels is {dvae.InputChannels}, but blocks.input.w takes {channels}";
                }
                if (Shape(weights, "blocks.output.conv.w") is [var vocabulary, _, _, _] && vocabulary != dvae.VocabSize)
                    return $"{f}vocab_size is {dvae.VocabSize}, but blocks.output.conv.w has {vocabulary} codes";
                int groups = CountIndexed(weights, "blocks.group_", firstIndex: 1);
                if (groups != dvae.GroupCount) return $"{f}group_count is {dvae.GroupCount}, but the weights hold {groups} groups";
                int blocks = CountIndexed(weights, "blocks.group_1.block_", firstIndex: 1);
                if (blocks != dvae.BlocksPerGroup) return $"{f}blocks_per_group is {dvae.BlocksPerGroup}, but the weights hold {blocks} blocks in group 1";
                return null;
            default:
                return DiagnoseVit(spec.Config!, weights, "", f);
        }
    }

    private static string? DiagnoseVit(VitConfig c, INamedTensors weights, string p, string f)
    {
        string? Presence(string name, bool expected, string field, object value) =>
            weights.Contains(p + name) == expected ? null
            : $"{f}{field} is {Show(value)}, but the weights {(expected ? "have no" : "have a")} {p}{name}";

        int depth = CountIndexed(weights, p + "blocks.");
        if (depth != c.Depth) return $"{f}depth is {c.Depth}, but the weights hold {depth} blocks";
        if (Shape(weights, p + "cls_token") is [_, _, var width] && width != c.EmbedDim) return $"{f}embed_dim is {c.EmbedDim}, but {p}cls_token has width {width}";
        if (Shape(weights, p + "patch_embed.proj.weight") is [_, var channels, var patch, _])
        {
            if (channels != c.InChannels) return $"{f}in_channels is {c.InChannels}, but {p}patch_embed.proj.weight takes {channels}";
            if (patch != c.PatchSize) return $"{f}patch_size is {c.PatchSize}, but {p}patch_embed.proj.weight has {patch}×{patch} kernels";
        }
        string? presence = Presence("pos_embed", c.UseAbsPosEmb, "use_abs_pos_emb", c.UseAbsPosEmb)
            ?? Presence("mask_token", c.UseMaskToken, "use_mask_token", c.UseMaskToken)
            ?? Presence("rel_pos_bias.relative_position_bias_table", c.UseSharedRelPosBias, "use_shared_rel_pos_bias", c.UseSharedRelPosBias)
            ?? Presence("blocks.0.attn.relative_position_bias_table", c.UseRelPosBias, "use_rel_pos_bias", c.UseRelPosBias)
            ?? Presence("norm_pre.weight", c.PreNorm, "pre_norm", c.PreNorm)
            ?? Presence("fc_norm.weight", c.UsesAveragePool, "global_pool", c.GlobalPool)
            ?? Presence("head.weight", c.NumClasses > 0, "num_classes", c.NumClasses)
            ?? Presence("blocks.0.attn.q_bias", c.BeitAttention && c.QkvBias, c.BeitAttention ? "qkv_bias" : "beit_attention", c.BeitAttention ? c.QkvBias : c.BeitAttention)
            ?? Presence("blocks.0.attn.qkv.bias", !c.BeitAttention && c.QkvBias, c.BeitAttention ? "beit_attention" : "qkv_bias", c.BeitAttention ? c.BeitAttention : c.QkvBias)
            ?? Presence(c.BeitAttention ? "blocks.0.gamma_1" : "blocks.0.ls1.gamma", c.InitValues is not null, "init_values", c.InitValues!);
        if (presence is not null) return presence;
        if (Shape(weights, p + "pos_embed") is [_, var positions, _] && positions != c.NumPatches + 1)
            return $"{f}img_size is {c.ImgSize} ({c.NumPatches + 1} positions with patch_size {c.PatchSize}), but {p}pos_embed has {positions}";
        string? table = weights.Contains(p + "blocks.0.attn.relative_position_bias_table") ? p + "blocks.0.attn.relative_position_bias_table"
            : weights.Contains(p + "rel_pos_bias.relative_position_bias_table") ? p + "rel_pos_bias.relative_position_bias_table" : null;
        if (table is not null && Shape(weights, table) is [var rows, var tableHeads])
        {
            if (rows != RelativePositionBias.TableSize(c.GridSize, c.GridSize))
                return $"{f}img_size is {c.ImgSize} (a {c.GridSize}×{c.GridSize} grid with patch_size {c.PatchSize}), but {table} has {rows} rows";
            if (tableHeads != c.NumHeads) return $"{f}num_heads is {c.NumHeads}, but {table} has {tableHeads} columns";
        }
        if (Shape(weights, p + "blocks.0.mlp.fc1.weight") is [var hidden, _] && hidden != (int)(c.EmbedDim * c.MlpRatio))
            return $"{f}mlp_ratio is {Show(c.MlpRatio)} ({(int)(c.EmbedDim * c.MlpRatio)} hidden units), but {p}blocks.0.mlp.fc1.weight has {hidden}";
        if (Shape(weights, p + "head.weight") is [var classes, _] && classes != c.NumClasses) return $"{f}num_classes is {c.NumClasses}, but {p}head.weight has {classes} rows";
        return null;
    }

    private static long[]? Shape(INamedTensors weights, string name) => weights.Contains(name) ? weights.ShapeOf(name) : null;

    /// <summary>One more than the largest index N of names <c>{prefix}N.…</c> (0 without any); indices past int are capped, not parsed.</summary>
    private static int CountIndexed(INamedTensors weights, string prefix, int firstIndex = 0)
    {
        int count = 0;
        foreach (string name in weights.Names)
        {
            if (!name.StartsWith(prefix, StringComparison.Ordinal)) continue;
            int end = name.IndexOf('.', prefix.Length);
            if (end < 0) continue;
            var digits = name.AsSpan(prefix.Length, end - prefix.Length);
            if (digits.IsEmpty || !digits.ContainsOnlyDigits()) continue;
            int index = int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int parsed) ? parsed : int.MaxValue - 1;
            count = Math.Max(count, index + 1 - firstIndex);
        }
        return count;
    }

    private static bool ContainsOnlyDigits(this ReadOnlySpan<char> text)
    {
        foreach (char c in text)
            if (c is < '0' or > '9') return false;
        return true;
    }

    private static string Show(object? value) => value switch
    {
        null => "null",
        bool b => b ? "true" : "false",
        string s => $"'{s}'",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };

    private static string Listed(List<string> names) => string.Join(", ", names.Take(8)) + (names.Count > 8 ? $", … ({names.Count} in all)" : "");

    private sealed class OrderedShapes
    {
        private readonly Dictionary<string, long[]> shapes = new(StringComparer.Ordinal);

        public IReadOnlyDictionary<string, long[]> Result => shapes;

        public void Add(string name, params long[] shape) => shapes.Add(name, shape);

        public void Linear(string name, long input, long output)
        {
            Add(name + ".weight", output, input);
            Add(name + ".bias", output);
        }

        public void Norm(string name, long dim)
        {
            Add(name + ".weight", dim);
            Add(name + ".bias", dim);
        }
    }
}
