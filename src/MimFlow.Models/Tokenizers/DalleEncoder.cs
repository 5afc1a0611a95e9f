using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Tokenizers;

/// <summary>
/// Sizes of the DALL-E dVAE encoder (OpenAI's <c>dall_e.Encoder</c>; the defaults are the released 8192-token encoder
/// that BEiT v1 uses as its frozen tokenizer). The original builds exactly four groups (its <c>group_count</c> is a
/// class constant, not a constructor argument); other group counts follow the same doubling pattern. The original's
/// validators (n_hid ≥ 64, vocab ≥ 512) are not enforced so that small encoders can be built for tests.
/// </summary>
public sealed record DalleEncoderConfig(int GroupCount = 4, int HiddenSize = 256, int BlocksPerGroup = 2, int InputChannels = 3, int VocabSize = 8192)
{
    /// <summary>The original's <c>n_layers = group_count * n_blk_per_group</c>.</summary>
    public int LayerCount => GroupCount * BlocksPerGroup;

    /// <summary>The residual branch's gain, <c>1 / n_layers²</c>.</summary>
    public double PostGain => 1.0 / ((double)LayerCount * LayerCount);

    /// <summary>Side of the pixel square one code covers: every group but the last halves the resolution (8 for four groups).</summary>
    public int Downsampling => 1 << (GroupCount - 1);

    /// <summary>Channels of group <paramref name="group"/> (1-based): n_hid · 2^(group−1), so 1, 2, 4, 8 × n_hid.</summary>
    public int GroupWidth(int group) => HiddenSize << (group - 1);

    internal void Validate()
    {
        if (Problem() is var (field, reason)) throw new ArgumentOutOfRangeException(field, reason);
    }

    /// <summary>The first value out of its bounds (<see cref="DalleLimits"/>), as (field as config.json names it, what is wrong), or null.</summary>
    public (string Field, string Reason)? Problem()
    {
        static string Range(long value, long min, long max) => $"is {value}, outside {min}…{max}";
        if (GroupCount is < 1 or > DalleLimits.MaxGroups) return ("group_count", Range(GroupCount, 1, DalleLimits.MaxGroups));
        // A block's hidden width is its output width / 4, and the widest group has hidden_size · 2^(groups − 1) channels.
        if (HiddenSize < 4 || HiddenSize % 4 != 0 || HiddenSize > DalleLimits.MaxHiddenSize)
            return ("hidden_size", $"is {HiddenSize}, not a multiple of 4 in 4…{DalleLimits.MaxHiddenSize}");
        if (BlocksPerGroup is < 1 or > DalleLimits.MaxBlocksPerGroup) return ("blocks_per_group", Range(BlocksPerGroup, 1, DalleLimits.MaxBlocksPerGroup));
        if (InputChannels is < 1 or > DalleLimits.MaxChannels) return ("input_channels", Range(InputChannels, 1, DalleLimits.MaxChannels));
        if (VocabSize is < 1 or > DalleLimits.MaxVocabulary) return ("vocab_size", Range(VocabSize, 1, DalleLimits.MaxVocabulary));
        return null;
    }
}

/// <summary>
/// Absolute bounds on a dVAE encoder configuration (docs/reliability.md); the released encoder is 4 groups × 2 blocks,
/// n_hid 256, 8192 codes. With these the widest group has at most 65,536 · 2^7 channels, inside int.
/// </summary>
public static class DalleLimits
{
    public const int MaxGroups = 8;
    public const int MaxHiddenSize = 65_536;
    public const int MaxBlocksPerGroup = 1024;
    public const int MaxChannels = 4096;
    public const int MaxVocabulary = 1 << 20;
}

/// <summary>
/// DALL-E's own convolution (<c>dall_e.utils.Conv2d</c>): odd square kernel k, stride 1, zero padding (k−1)/2, so
/// the spatial size is kept. Parameters <c>w</c> [out, in, k, k] and <c>b</c> [out], float32; initialised as the
/// original: w ~ N(0, 1/√(in·k²)), b = 0. (The original's half-precision path only applies on CUDA.)
/// </summary>
public sealed class DalleConv2d : Module<Tensor, Tensor>
{
    [ComponentName(Name = "w")] private readonly Parameter weight;
    [ComponentName(Name = "b")] private readonly Parameter bias;
    private readonly long padding;

    public DalleConv2d(int inChannels, int outChannels, int kernelSize, Generator? generator = null) : base("Conv2d")
    {
        if (inChannels < 1) throw new ArgumentOutOfRangeException(nameof(inChannels));
        if (outChannels < 1) throw new ArgumentOutOfRangeException(nameof(outChannels));
        if (kernelSize < 1 || kernelSize % 2 == 0) throw new ArgumentOutOfRangeException(nameof(kernelSize), kernelSize, "must be odd and positive");
        KernelSize = kernelSize;
        padding = (kernelSize - 1) / 2;
        using (no_grad())
        {
            var w = empty(new long[] { outChannels, inChannels, kernelSize, kernelSize }, dtype: float32);
            w.normal_(0.0, 1.0 / Math.Sqrt((double)inChannels * kernelSize * kernelSize), generator);
            weight = Parameter(w);
            bias = Parameter(zeros(new long[] { outChannels }, dtype: float32));
        }
        RegisterComponents();
    }

    public int KernelSize { get; }

    public Parameter Weight => weight;

    public Parameter Bias => bias;

    public override Tensor forward(Tensor x)
    {
        if (x.dtype == weight.dtype) return functional.conv2d(x, weight, bias, padding: new[] { padding, padding });
        using var cast = x.to(weight.dtype);
        return functional.conv2d(cast, weight, bias, padding: new[] { padding, padding });
    }
}

/// <summary>
/// <c>dall_e.encoder.EncoderBlock</c>: <c>id_path(x) + post_gain · res_path(x)</c>, where <c>id_path</c> is a 1×1
/// <see cref="DalleConv2d"/> when the channel count changes (else the identity, with no parameters) and
/// <c>res_path</c> = ReLU → <c>conv_1</c> 3×3 (in → out/4) → ReLU → <c>conv_2</c> 3×3 → ReLU → <c>conv_3</c> 3×3 →
/// ReLU → <c>conv_4</c> 1×1 (out/4 → out). Parameters: <c>id_path.{w,b}</c> (when present),
/// <c>res_path.conv_{1..4}.{w,b}</c>.
/// </summary>
public sealed class DalleEncoderBlock : Module<Tensor, Tensor>
{
    [ComponentName(Name = "id_path")] private readonly Module<Tensor, Tensor> idPath;
    [ComponentName(Name = "res_path")] private readonly Sequential resPath;

    public DalleEncoderBlock(int inChannels, int outChannels, int layerCount, Generator? generator = null) : base("EncoderBlock")
    {
        if (outChannels < 4 || outChannels % 4 != 0) throw new ArgumentOutOfRangeException(nameof(outChannels), outChannels, "must be a positive multiple of 4");
        if (layerCount < 1) throw new ArgumentOutOfRangeException(nameof(layerCount));
        int hidden = outChannels / 4;
        PostGain = 1.0 / ((double)layerCount * layerCount);
        // Built in the original's order (id_path, then conv_1..conv_4) so a seeded generator draws the weights in the same sequence.
        idPath = inChannels != outChannels ? new DalleConv2d(inChannels, outChannels, 1, generator) : Identity();
        resPath = Sequential(
            ("relu_1", ReLU()),
            ("conv_1", new DalleConv2d(inChannels, hidden, 3, generator)),
            ("relu_2", ReLU()),
            ("conv_2", new DalleConv2d(hidden, hidden, 3, generator)),
            ("relu_3", ReLU()),
            ("conv_3", new DalleConv2d(hidden, hidden, 3, generator)),
            ("relu_4", ReLU()),
            ("conv_4", new DalleConv2d(hidden, outChannels, 1, generator)));
        RegisterComponents();
    }

    /// <summary><c>1 / n_layers²</c> of the whole encoder.</summary>
    public double PostGain { get; }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var output = idPath.forward(x) + PostGain * resPath.forward(x);
        return output.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The DALL-E dVAE encoder (<c>dall_e.encoder.Encoder</c>), BEiT v1's frozen tokenizer: pixels in [0, 1], mapped by
/// <see cref="MapPixels"/>, give logits over the 8192 visual tokens on a grid 8× smaller than the image; a code is
/// the argmax (BEiT v1 tokenizes its 112×112 second view into 14×14 codes).
/// <para>
/// Module tree (under <c>blocks</c>): <c>input</c> 7×7 conv (in → n_hid); <c>group_g</c> for g = 1..4 with
/// <c>block_1..block_n</c> (<see cref="DalleEncoderBlock"/>, width 2^(g−1)·n_hid, the first block taking the previous
/// group's width) and a 2×2 max pool <c>pool</c> except in the last group; <c>output</c> = ReLU (<c>relu</c>) → 1×1
/// conv <c>conv</c> (8·n_hid → vocab).
/// </para>
/// <para>
/// State-dict names, exactly those of the original module (so a PyTorch state_dict of the released encoder loads
/// strictly), for the default 4 groups × 2 blocks:
/// <c>blocks.input.{w,b}</c>;
/// <c>blocks.group_1.block_{1,2}.res_path.conv_{1,2,3,4}.{w,b}</c> (no id_path: 256 → 256);
/// <c>blocks.group_2.block_1.id_path.{w,b}</c>, <c>blocks.group_2.block_{1,2}.res_path.conv_{1..4}.{w,b}</c>;
/// <c>blocks.group_3.block_1.id_path.{w,b}</c>, <c>blocks.group_3.block_{1,2}.res_path.conv_{1..4}.{w,b}</c>;
/// <c>blocks.group_4.block_1.id_path.{w,b}</c>, <c>blocks.group_4.block_{1,2}.res_path.conv_{1..4}.{w,b}</c>;
/// <c>blocks.output.conv.{w,b}</c>. ReLUs, pools and identities have no parameters. 74 tensors, 53,786,240 values.
/// </para>
/// <para>
/// Everything runs in float32, as the original does on CPU. On CUDA the original runs every convolution but
/// <c>output.conv</c> in float16, so codes it produced there can differ from these where two logits nearly tie.
/// </para>
/// </summary>
public sealed class DalleEncoder : Module<Tensor, Tensor>
{
    /// <summary>DALL-E's <c>logit_laplace_eps</c>.</summary>
    public const double LogitLaplaceEps = 0.1;

    [ComponentName(Name = "blocks")] private readonly Sequential blocks;

    /// <param name="generator">Draws the initial weights in the original's construction order; null uses the global generator.</param>
    public DalleEncoder(DalleEncoderConfig config, Generator? generator = null) : base("Encoder")
    {
        config.Validate();
        Config = config;
        int layers = config.LayerCount;
        var modules = new List<(string, Module<Tensor, Tensor>)>
        {
            ("input", new DalleConv2d(config.InputChannels, config.HiddenSize, 7, generator)),
        };
        for (int group = 1; group <= config.GroupCount; group++)
        {
            int width = config.GroupWidth(group);
            int previous = group == 1 ? config.HiddenSize : config.GroupWidth(group - 1);
            var groupModules = new List<(string, Module<Tensor, Tensor>)>();
            for (int block = 1; block <= config.BlocksPerGroup; block++)
                groupModules.Add(($"block_{block}", new DalleEncoderBlock(block == 1 ? previous : width, width, layers, generator)));
            if (group < config.GroupCount) groupModules.Add(("pool", MaxPool2d(2)));
            modules.Add(($"group_{group}", Sequential(groupModules.ToArray())));
        }
        modules.Add(("output", Sequential(
            ("relu", ReLU()),
            ("conv", new DalleConv2d(config.GroupWidth(config.GroupCount), config.VocabSize, 1, generator)))));
        blocks = Sequential(modules.ToArray());
        RegisterComponents();
    }

    public DalleEncoderConfig Config { get; }

    /// <summary>An encoder with the original's initialisation drawn from a generator seeded with <paramref name="seed"/> (same seed, same weights).</summary>
    public static DalleEncoder Create(DalleEncoderConfig config, long seed)
    {
        using var generator = new Generator(unchecked((ulong)seed));
        return new DalleEncoder(config, generator);
    }

    /// <summary>DALL-E's <c>map_pixels</c>: (1 − 2·eps)·x + eps with eps = 0.1, taking [0, 1] to [0.1, 0.9].</summary>
    public static Tensor MapPixels(Tensor pixels01)
    {
        if (pixels01.dim() != 4) throw new ArgumentException($"expected a 4-d input, got [{string.Join(", ", pixels01.shape)}]", nameof(pixels01));
        if (!pixels01.is_floating_point()) throw new ArgumentException($"expected a floating-point input, got {pixels01.dtype}", nameof(pixels01));
        using var scaled = pixels01 * (1 - 2 * LogitLaplaceEps);
        return scaled + LogitLaplaceEps;
    }

    /// <summary>Logits [B, vocab, H/8, W/8] of mapped pixels [B, C, H, W] (float32, see <see cref="MapPixels"/>).</summary>
    public Tensor Logits(Tensor mappedPixels) => forward(mappedPixels);

    public override Tensor forward(Tensor mappedPixels)
    {
        if (mappedPixels.dim() != 4) throw new ArgumentException($"input shape [{string.Join(", ", mappedPixels.shape)}] is not 4d", nameof(mappedPixels));
        if (mappedPixels.shape[1] != Config.InputChannels)
            throw new ArgumentException($"input has {mappedPixels.shape[1]} channels but the encoder is built for {Config.InputChannels}", nameof(mappedPixels));
        if (mappedPixels.dtype != ScalarType.Float32) throw new ArgumentException($"input must be float32, got {mappedPixels.dtype}", nameof(mappedPixels));
        return blocks.forward(mappedPixels);
    }

    /// <summary>
    /// Codes [B, (H/8)·(W/8)] (int64, row-major over the code grid) of pixels in [0, 1] [B, C, H, W]: the argmax over
    /// the vocabulary of <see cref="Logits"/> of <see cref="MapPixels"/>, as BEiT's <c>get_codebook_indices(...).flatten(1)</c>.
    /// </summary>
    public Tensor Tokenize(Tensor pixels01)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = Logits(MapPixels(pixels01));
        return logits.argmax(1).flatten(1).MoveToOuterDisposeScope();
    }
}
