using System.Text.RegularExpressions;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Tokenizers;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>A checkpoint read as a MimFlow model: its spec, its tensors under our names, and what was left out (and why).</summary>
public sealed record ForeignCheckpoint(ModelSpec Spec, INamedTensors Tensors, IReadOnlyList<string> LeftOut)
{
    /// <summary>The classifier's label names by index, where the checkpoint's configuration names them.</summary>
    public IReadOnlyList<string>? Labels { get; init; }

    /// <summary>What the reader wants the user to know (a parameter made because the checkpoint has none, …).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>
/// A checkpoint's tensors under another naming: each target name is read from one source tensor through a transform
/// (reshape, transpose) or made from nothing (a zero bias the source format does not have).
/// </summary>
public sealed class TranslatedTensors(string origin) : INamedTensors
{
    private readonly Dictionary<string, (long[] Shape, Func<Tensor> Make)> entries = new(StringComparer.Ordinal);

    public string Origin { get; } = origin;

    public IEnumerable<string> Names => entries.Keys;

    public bool Contains(string name) => entries.ContainsKey(name);

    public long[] ShapeOf(string name) => entries[name].Shape;

    /// <summary>The tensor, checked to have its declared shape (the one the model was checked against).</summary>
    public Tensor Read(string name)
    {
        var (shape, make) = entries[name];
        var value = make();
        if (value.shape.SequenceEqual(shape)) return value;
        string made = string.Join(", ", value.shape);
        value.Dispose();
        throw new InvalidDataException($"{Origin}: '{name}' comes out [{made}] from the checkpoint's tensors, not [{string.Join(", ", shape)}]");
    }

    public void Add(string name, long[] shape, Func<Tensor> make) => entries.Add(name, (shape, make));
}

/// <summary>
/// Imports of the reference implementations' checkpoints, as <see cref="Checkpoints.CheckpointFile"/> reads them from
/// safetensors, .pth pickles or TorchScript (docs/model-interop.md): unilm BEiT and BEiT v2 backbones, unilm VQ-KD tokenizers and OpenAI CLIP visual encoders.
/// The configuration is read off the tensors' names and shapes; tensors that are not part of the model (training
/// heads, the VQ-KD teacher, CLIP's text tower) are left out and listed; any other unknown name is an error.
/// </summary>
public static partial class ForeignCheckpoints
{
    /// <summary>The formats that come as a Hugging Face transformers folder (config.json + weights) or a lone weights file.</summary>
    // Declared before Formats: static initialisers run in textual order.
    public static IReadOnlyList<string> HuggingFaceFormats { get; } = ["hf-beit", "hf-clip", "hf-vit"];

    public static IReadOnlyList<string> Formats { get; } = ["unilm-beit", "unilm-vqkd", "openai-clip", "dall-e", .. HuggingFaceFormats];

    /// <param name="huggingFace">The transformers config.json of an hf-* checkpoint, where there is one.</param>
    public static ForeignCheckpoint Read(string format, INamedTensors file, int? heads = null, HuggingFaceConfig? huggingFace = null) => Checked(format switch
    {
        "unilm-beit" => UnilmBeit(file, heads),
        "unilm-vqkd" => UnilmVqkd(file, heads),
        "openai-clip" => OpenAiClip(file),
        "dall-e" => DallE(file),
        "hf-beit" => HuggingFaceBeit(file, huggingFace, heads),
        "hf-clip" => HuggingFaceClip(file, huggingFace, heads),
        "hf-vit" => HuggingFaceVit(file, huggingFace, heads),
        _ => throw new ArgumentException($"unknown checkpoint format '{format}' ({string.Join(", ", Formats)})"),
    }, file.Origin);

    /// <summary>
    /// unilm's BEiT / BEiT v2 <c>VisionTransformer</c> (pretraining or fine-tuned): the names are timm's Beit names;
    /// <c>lm_head</c> (the MIM head) and <c>cls_pt_layers</c>/<c>cls_pt_norm</c> (BEiT v2 patch aggregation) are
    /// pretraining heads and are left out, as are the non-persistent <c>relative_position_index</c> buffers.
    /// </summary>
    public static ForeignCheckpoint UnilmBeit(INamedTensors file, int? heads = null)
    {
        var (kept, leftOut) = Partition(file, name => name.EndsWith("relative_position_index", StringComparison.Ordinal)
            || name.StartsWith("lm_head.", StringComparison.Ordinal) || name.StartsWith("cls_pt_layers.", StringComparison.Ordinal)
            || name.StartsWith("cls_pt_norm.", StringComparison.Ordinal));
        var config = BeitConfigOf(file, kept, heads, "");
        return new ForeignCheckpoint(new ModelSpec("beit", Config: config), OneToOne(file, kept), leftOut);
    }

    /// <summary>
    /// unilm's VQ-KD (BEiT v2 tokenizer): <c>encoder.*</c>, <c>decoder.*</c>, <c>encode_task_layer.*</c>,
    /// <c>decode_task_layer.*</c>, <c>quantize.embedding.weight</c> and <c>quantize.cluster_size</c> map one to one;
    /// the teacher (<c>teacher_model.*</c>, <c>scaling_layer.*</c>) and the EMA bookkeeping of the codebook
    /// (<c>quantize.embedding.cluster_size/embed_avg/initted</c>) are left out.
    /// </summary>
    public static ForeignCheckpoint UnilmVqkd(INamedTensors file, int? heads = null)
    {
        var (kept, leftOut) = Partition(file, name => name.EndsWith("relative_position_index", StringComparison.Ordinal)
            || name.StartsWith("teacher_model.", StringComparison.Ordinal) || name.StartsWith("scaling_layer.", StringComparison.Ordinal)
            || name.StartsWith("loss", StringComparison.Ordinal)
            || name is "quantize.embedding.cluster_size" or "quantize.embedding.embed_avg" or "quantize.embedding.initted");
        var encoder = BeitConfigOf(file, kept, heads, "encoder.");
        string codebook = Require(file, kept, "quantize.embedding.weight");
        string decoderOut = Require(file, kept, "decode_task_layer.2.weight");
        var config = VqKdConfig.ForEncoder(encoder) with
        {
            Codes = Dims(file, codebook, 2)[0], CodeDim = Dims(file, codebook, 2)[1],
            DecoderDepth = CountBlocks(kept.Keys, "decoder."), TeacherDim = Dims(file, decoderOut, 2)[0],
        };
        return new ForeignCheckpoint(new ModelSpec("vqkd", Vqkd: config), OneToOne(file, kept), leftOut);
    }

    /// <summary>
    /// OpenAI CLIP's visual encoder (<c>visual.*</c> of a CLIP state dict, or the visual module alone) as a timm
    /// VisionTransformer: conv1 → patch_embed.proj (no bias), class_embedding → cls_token, positional_embedding →
    /// pos_embed, ln_pre → norm_pre, transformer.resblocks.i.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc,
    /// mlp.c_proj} → blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, ln_post → norm, and proj (D × E,
    /// applied as x·proj) → head.weight = projᵀ with a zero head.bias. Heads: width / 64, as CLIP builds them.
    /// The text tower and the logit scale are left out.
    /// </summary>
    public static ForeignCheckpoint OpenAiClip(INamedTensors file)
    {
        bool wholeClip = file.Names.Any(n => n.StartsWith("visual.", StringComparison.Ordinal));
        var leftOut = new List<string>();
        var visual = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entryName in file.Names)
        {
            if (wholeClip && !entryName.StartsWith("visual.", StringComparison.Ordinal)) leftOut.Add(entryName);
            else visual[wholeClip ? entryName["visual.".Length..] : entryName] = entryName;
        }
        string conv = Require(file, visual, "conv1.weight"), positions = Require(file, visual, "positional_embedding"), projection = Require(file, visual, "proj");
        int[] convShape = Dims(file, conv, 4);
        int width = convShape[0], patch = convShape[2], grid = GridOf(Dims(file, positions, 2)[0] - 1, positions, file);
        // The tensors reshaped or transposed below must have the width conv1 gives, or the translation fails inside libtorch.
        string classEmbedding = Require(file, visual, "class_embedding");
        if (Dims(file, classEmbedding, 1)[0] != width) throw WidthMismatch(file, classEmbedding, width);
        if (Dims(file, positions, 2)[1] != width) throw WidthMismatch(file, positions, width);
        if (Dims(file, projection, 2)[0] != width) throw WidthMismatch(file, projection, width);
        var tensors = new TranslatedTensors(file.Origin);
        void Map(string target, string source, long[]? shape = null, Func<Tensor, Tensor>? transform = null)
        {
            string name = Require(file, visual, source);
            visual.Remove(source);
            tensors.Add(target, shape ?? file.ShapeOf(name), () =>
            {
                var raw = file.Read(name);
                if (transform is null) return raw;
                using (raw) return transform(raw);
            });
        }
        Map("patch_embed.proj.weight", "conv1.weight");
        Map("cls_token", "class_embedding", [1, 1, width], t => t.reshape(1, 1, width));
        Map("pos_embed", "positional_embedding", [1, file.ShapeOf(positions)[0], width], t => t.unsqueeze(0));
        foreach (string part in new[] { "weight", "bias" })
        {
            Map($"norm_pre.{part}", $"ln_pre.{part}");
            Map($"norm.{part}", $"ln_post.{part}");
        }
        long embed = Dims(file, projection, 2)[1];
        Map("head.weight", "proj", [embed, width], t => t.t().contiguous());
        tensors.Add("head.bias", [embed], () => zeros(embed));
        int depth = 0;
        for (; visual.ContainsKey($"transformer.resblocks.{depth}.ln_1.weight"); depth++)
        {
            string from = $"transformer.resblocks.{depth}.", to = $"blocks.{depth}.";
            foreach (string part in new[] { "weight", "bias" })
            {
                Map($"{to}norm1.{part}", $"{from}ln_1.{part}");
                Map($"{to}attn.qkv.{part}", $"{from}attn.in_proj_{part}");
                Map($"{to}attn.proj.{part}", $"{from}attn.out_proj.{part}");
                Map($"{to}norm2.{part}", $"{from}ln_2.{part}");
                Map($"{to}mlp.fc1.{part}", $"{from}mlp.c_fc.{part}");
                Map($"{to}mlp.fc2.{part}", $"{from}mlp.c_proj.{part}");
            }
        }
        if (visual.Count > 0) throw new InvalidDataException($"{file.Origin}: unexpected tensors for a CLIP visual encoder: {string.Join(", ", visual.Values.Take(8))}");
        string fc = $"{(wholeClip ? "visual." : "")}transformer.resblocks.0.mlp.c_fc.weight";
        if (!file.Contains(fc)) throw new InvalidDataException($"{file.Origin}: '{fc}' is missing: a CLIP visual encoder needs at least one block");
        long hidden = Dims(file, fc, 2)[0];
        var config = new VitConfig
        {
            ImgSize = GridSide(grid, patch), PatchSize = patch, InChannels = convShape[1], EmbedDim = width, Depth = depth, NumHeads = width / 64,
            MlpRatio = (double)hidden / width, NumClasses = (int)embed, PreNorm = true, Activation = Activation.QuickGelu, LayerNormEps = 1e-5,
        };
        return new ForeignCheckpoint(new ModelSpec("clip", Config: config), tensors, leftOut);
    }

    /// <summary>
    /// OpenAI's DALL-E dVAE encoder state dict, names unchanged (<see cref="DalleEncoder"/> lists them); the sizes are
    /// read off the shapes: width and input channels from <c>blocks.input.w</c>, vocabulary from
    /// <c>blocks.output.conv.w</c>, groups and blocks per group from the names.
    /// </summary>
    public static ForeignCheckpoint DallE(INamedTensors file)
    {
        var names = file.Names.ToDictionary(n => n, n => n, StringComparer.Ordinal);
        int[] input = Dims(file, Require(file, names, "blocks.input.w"), 4);
        int[] output = Dims(file, Require(file, names, "blocks.output.conv.w"), 4);
        var group = new Regex(@"^blocks\.group_(\d+)\.block_(\d+)\.");
        var blocks = names.Keys.Select(n => group.Match(n)).Where(m => m.Success)
            .Select(m => (Group: Index(m.Groups[1].Value), Block: Index(m.Groups[2].Value))).ToList();
        if (blocks.Count == 0) throw new InvalidDataException($"{file.Origin}: no blocks.group_*.block_* tensors: not a DALL-E encoder");
        var config = new DalleEncoderConfig(GroupCount: blocks.Max(b => b.Group), HiddenSize: input[0], BlocksPerGroup: blocks.Max(b => b.Block),
            InputChannels: input[1], VocabSize: output[0]);
        return new ForeignCheckpoint(new ModelSpec("dvae", Dvae: config), OneToOne(file, names), []);
    }

    /// <summary>The checkpoint's names (without <c>module.</c>) → file names, split into kept and left out (file names).</summary>
    private static (Dictionary<string, string> Kept, List<string> LeftOut) Partition(INamedTensors file, Func<string, bool> leaveOut)
    {
        var kept = new Dictionary<string, string>(StringComparer.Ordinal);
        var leftOut = new List<string>();
        foreach (var (name, source) in StrippedNames(file))
            if (leaveOut(name)) leftOut.Add(source);
            else kept[name] = source;
        return (kept, leftOut);
    }

    private static TranslatedTensors OneToOne(INamedTensors file, Dictionary<string, string> names)
    {
        var tensors = new TranslatedTensors(file.Origin);
        foreach (var (name, source) in names) tensors.Add(name, file.ShapeOf(source), () => file.Read(source));
        return tensors;
    }

    /// <summary>Names without a leading <c>module.</c> (DistributedDataParallel) → the names in the file.</summary>
    private static Dictionary<string, string> StrippedNames(INamedTensors file) =>
        file.Names.ToDictionary(n => n.StartsWith("module.", StringComparison.Ordinal) ? n["module.".Length..] : n, n => n, StringComparer.Ordinal);

    /// <summary>A BEiT-style ViT's configuration read off its tensors (names under <paramref name="prefix"/>).</summary>
    private static VitConfig BeitConfigOf(INamedTensors file, Dictionary<string, string> names, int? heads, string prefix)
    {
        string patchWeight = Require(file, names, prefix + "patch_embed.proj.weight");
        int[] patchShape = Dims(file, patchWeight, 4);
        int dim = patchShape[0], patch = patchShape[2];
        int depth = CountBlocks(names.Keys, prefix);
        string? perLayerTable = names.GetValueOrDefault(prefix + "blocks.0.attn.relative_position_bias_table");
        string? sharedTable = names.GetValueOrDefault(prefix + "rel_pos_bias.relative_position_bias_table");
        string? positions = names.GetValueOrDefault(prefix + "pos_embed");
        string? table = perLayerTable ?? sharedTable;
        int grid = positions is not null
            ? GridOf(Dims(file, positions, 3)[1] - 1, positions, file)
            : table is not null ? TableGridOf(Dims(file, table, 2)[0], table, file)
            : throw new InvalidDataException($"{file.Origin}: neither pos_embed nor a relative position table: the patch grid is unknown");
        int headCount = table is not null ? Dims(file, table, 2)[1] : heads ?? StandardHeads(dim, file);
        if (heads is int given && given != headCount) throw new InvalidDataException($"{file.Origin}: --heads {given} disagrees with the relative position table ({headCount} heads)");
        string fc1 = Require(file, names, prefix + "blocks.0.mlp.fc1.weight");
        string? head = names.GetValueOrDefault(prefix + "head.weight");
        return new VitConfig
        {
            ImgSize = GridSide(grid, patch), PatchSize = patch, InChannels = patchShape[1], EmbedDim = dim, Depth = depth, NumHeads = headCount,
            MlpRatio = (double)Dims(file, fc1, 2)[0] / dim, NumClasses = head is null ? 0 : Dims(file, head, 2)[0],
            BeitAttention = true, QkvBias = names.ContainsKey(prefix + "blocks.0.attn.q_bias"),
            UseAbsPosEmb = positions is not null, UseRelPosBias = perLayerTable is not null, UseSharedRelPosBias = sharedTable is not null,
            InitValues = names.ContainsKey(prefix + "blocks.0.gamma_1") ? (dim >= 1024 ? 1e-5 : 0.1) : null,
            GlobalPool = names.ContainsKey(prefix + "fc_norm.weight") ? "avg" : "token",
            UseMaskToken = names.ContainsKey(prefix + "mask_token"),
        };
    }

    private static int CountBlocks(IEnumerable<string> names, string prefix)
    {
        var block = new Regex("^" + Regex.Escape(prefix) + @"blocks\.(\d+)\.");
        return names.Select(n => block.Match(n)).Where(m => m.Success).Select(m => Index(m.Groups[1].Value) + 1).DefaultIfEmpty(0).Max();
    }

    /// <summary>
    /// A block or group index from a tensor name. Indices past the size limits are capped rather than parsed (a name
    /// may carry any digits), so the configuration they imply is refused by its bounds, not by an overflow.
    /// </summary>
    private static int Index(string digits) =>
        int.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index) && index < 1 << 24 ? index : 1 << 24;

    /// <summary>
    /// The dimensions of a tensor the format gives rank <paramref name="rank"/>, each a positive int; otherwise an
    /// error naming the file and the tensor (a configuration is read off these shapes, so they must be what they claim).
    /// </summary>
    private static int[] Dims(INamedTensors file, string name, int rank)
    {
        if (!file.Contains(name)) throw new InvalidDataException($"{file.Origin}: '{name}' is missing");
        long[] shape = file.ShapeOf(name);
        if (shape.Length != rank || shape.Any(d => d is < 1 or > int.MaxValue))
            throw new InvalidDataException($"{file.Origin}: '{name}' has shape [{string.Join(", ", shape)}], not {rank} positive dimensions as this format gives it");
        return [.. shape.Select(d => (int)d)];
    }

    /// <summary>
    /// Refuses a configuration read off a checkpoint's tensors that is out of MimFlow's bounds, naming the file and
    /// the field (a name like <c>blocks.5000.norm1.weight</c> implies 5001 blocks), before any module is built.
    /// </summary>
    private static ForeignCheckpoint Checked(ForeignCheckpoint checkpoint, string source)
    {
        checkpoint.Spec.Validate(source);
        return checkpoint;
    }

    private static InvalidDataException WidthMismatch(INamedTensors file, string name, int width) =>
        new($"{file.Origin}: '{name}' has shape [{string.Join(", ", file.ShapeOf(name))}], which does not fit the width {width} of the patch embedding");

    /// <summary>The image side of a patch grid; saturates instead of wrapping, so an absurd size is refused by its bound.</summary>
    private static int GridSide(int grid, int patch) => (int)Math.Min((long)grid * patch, int.MaxValue);

    private static int StandardHeads(int dim, INamedTensors file) => dim switch
    {
        192 => 3, 384 => 6, 768 => 12, 1024 => 16, 1280 => 16,
        _ => throw new InvalidDataException($"{file.Origin}: embed dim {dim} is not a standard size and the checkpoint has no relative position table; give --heads"),
    };

    private static int GridOf(long positions, string name, INamedTensors file) => PositionResampling.SquareGrid(positions)
        ?? throw new InvalidDataException($"{file.Origin}: '{name}' has {positions} patch positions, not a square grid");

    private static int TableGridOf(long rows, string name, INamedTensors file) => PositionResampling.GridOfTable(rows)
        ?? throw new InvalidDataException($"{file.Origin}: '{name}' has {rows} rows, not (2g − 1)² + 3 for a square grid");

    private static string Require(INamedTensors file, Dictionary<string, string> names, string name) =>
        names.TryGetValue(name, out var source) ? source : throw new InvalidDataException($"{file.Origin}: '{name}' is missing");
}
