using MimFlow.Models.Backbones;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// Shape of <see cref="UperNetHead"/>. Defaults are BEiT's ADE20K decoder (unilm <c>upernet_beit_base_12_512_slide_160k_ade20k</c>):
/// 768 channels, pyramid pooling scales 1, 2, 3, 6, dropout 0.1, and the auxiliary FCN head on the third level
/// (256 channels, loss weight 0.4).
/// </summary>
/// <param name="Channels">Width of the lateral, pyramid-pooling, FPN and bottleneck convolutions.</param>
/// <param name="AuxiliaryChannels">Width of the auxiliary FCN head (0: none).</param>
/// <param name="AuxiliaryWeight">Weight of the auxiliary head's loss in training.</param>
public sealed record UperNetConfig(int Channels = 768, int[]? PoolScales = null, double Dropout = 0.1, int AuxiliaryChannels = 256, double AuxiliaryWeight = 0.4)
{
    public IReadOnlyList<int> Scales => PoolScales ?? [1, 2, 3, 6];

    public void Validate()
    {
        if (Channels < 1 || AuxiliaryChannels < 0) throw new ArgumentException("UperNet channels must be positive");
        if (Scales.Count == 0 || Scales.Any(s => s < 1)) throw new ArgumentException("pool scales must be positive");
        if (Dropout is < 0 or >= 1 || AuxiliaryWeight < 0) throw new ArgumentException("dropout must be in [0, 1) and the auxiliary weight not negative");
    }

    /// <summary>
    /// The four blocks (0-based) BEiT reads for a ViT of this depth: 3, 5, 7, 11 for base (12 blocks) and 7, 11, 15, 23
    /// for large (24); other depths the evenly spaced quarter, half, three quarters and last (a depth-2 test model
    /// repeats blocks: 0, 0, 0, 1).
    /// </summary>
    public static int[] LevelsFor(int depth) => depth switch
    {
        < 1 => throw new ArgumentException($"UperNet needs a backbone with blocks (got depth {depth})"),
        12 => [3, 5, 7, 11],
        24 => [7, 11, 15, 23],
        _ => [Math.Max(0, depth / 4 - 1), Math.Max(0, depth / 2 - 1), Math.Max(0, 3 * depth / 4 - 1), depth - 1],
    };
}

/// <summary>
/// BEiT's semantic segmentation decoder: four block outputs turned into a feature pyramid at strides 4, 8, 16, 32
/// (two 2× deconvolutions with BatchNorm and GELU between; one deconvolution; identity; 2× max-pool), then mmseg's
/// <c>UPerHead</c> (Xiao et al. 2018): 1×1 laterals on the first three levels and pyramid pooling on the last, a
/// top-down path, 3×3 FPN convolutions, all levels resized to stride 4 and concatenated, a 3×3 bottleneck, dropout
/// and a 1×1 classifier. Every ConvModule is conv (no bias) → BatchNorm → ReLU, as mmseg's with SyncBN on one device.
/// The auxiliary FCN head (3×3 ConvModule, dropout, 1×1 classifier on the third level) only adds a training loss.
/// Both dropouts draw from the trainer's step generator, so a seeded run repeats itself.
/// <para>
/// Initialisation as mmcv's: ConvModule convolutions Kaiming-normal (fan_out, ReLU), norms 1/0, classifiers
/// normal(0, 0.01) with zero bias, deconvolutions PyTorch's default uniform(±1/√fan_in); drawn from a seeded generator.
/// </para>
/// </summary>
public sealed class UperNetHead : DecodeHead
{
    private readonly Sequential fpn1, fpn2, fpn3, fpn4;
    private readonly ModuleList<Sequential> lateral_convs, fpn_convs, psp_modules;
    private readonly Sequential bottleneck, fpn_bottleneck;
    private readonly SeededDropout dropout;
    private readonly Conv2d conv_seg;
    private readonly Sequential? auxiliary;
    private readonly Conv2d? auxiliary_seg;
    private readonly int[] layers;

    public UperNetHead(int embedDim, int depth, int classes, UperNetConfig config, long seed) : base("UperNetHead")
    {
        config.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        Config = config;
        Classes = classes;
        layers = UperNetConfig.LevelsFor(depth);
        int c = config.Channels;
        fpn1 = Sequential(ConvTranspose2d(embedDim, embedDim, 2, stride: 2), BatchNorm2d(embedDim), GELU(), ConvTranspose2d(embedDim, embedDim, 2, stride: 2));
        fpn2 = Sequential(ConvTranspose2d(embedDim, embedDim, 2, stride: 2));
        fpn3 = Sequential(Identity());
        fpn4 = Sequential(MaxPool2d(2, 2));
        lateral_convs = new ModuleList<Sequential>(Enumerable.Range(0, 3).Select(_ => ConvModule(embedDim, c, 1)).ToArray());
        psp_modules = new ModuleList<Sequential>(config.Scales.Select(s => Sequential(AdaptiveAvgPool2d(s), ConvModule(embedDim, c, 1))).ToArray());
        bottleneck = ConvModule(embedDim + config.Scales.Count * c, c, 3);
        fpn_convs = new ModuleList<Sequential>(Enumerable.Range(0, 3).Select(_ => ConvModule(c, c, 3)).ToArray());
        fpn_bottleneck = ConvModule(4 * c, c, 3);
        dropout = new SeededDropout(config.Dropout);
        conv_seg = Conv2d(c, classes, 1);
        if (config.AuxiliaryChannels > 0)
        {
            auxiliary = Sequential(ConvModule(embedDim, config.AuxiliaryChannels, 3), new SeededDropout(config.Dropout));
            auxiliary_seg = Conv2d(config.AuxiliaryChannels, classes, 1);
        }
        RegisterComponents();
        Initialize(seed);
    }

    public UperNetConfig Config { get; }

    public override int Classes { get; }

    public override IReadOnlyList<int> Layers => layers;

    /// <param name="levels">The outputs of <see cref="Layers"/>' blocks, [B, g·g, D] each.</param>
    /// <returns>Logits [B, K, height, width].</returns>
    public override Tensor forward(IReadOnlyList<Tensor> levels, long height, long width)
    {
        using var scope = NewDisposeScope();
        var logits = conv_seg.forward(dropout.forward(Decode(Pyramid(levels))));
        return Resize(logits, height, width).MoveToOuterDisposeScope();
    }

    /// <summary>The auxiliary head's logits at the input size (training only), or null when the config has none.</summary>
    public Tensor? Auxiliary(IReadOnlyList<Tensor> levels, long height, long width)
    {
        if (auxiliary is null) return null;
        using var scope = NewDisposeScope();
        var third = fpn3.forward(ToGrid(levels[2]));
        return Resize(auxiliary_seg!.forward(auxiliary.forward(third)), height, width).MoveToOuterDisposeScope();
    }

    private Tensor[] Pyramid(IReadOnlyList<Tensor> levels)
    {
        if (levels.Count != 4) throw new ArgumentException($"UperNet reads 4 levels (got {levels.Count})");
        return [fpn1.forward(ToGrid(levels[0])), fpn2.forward(ToGrid(levels[1])), fpn3.forward(ToGrid(levels[2])), fpn4.forward(ToGrid(levels[3]))];
    }

    private Tensor Decode(Tensor[] inputs)
    {
        var laterals = new List<Tensor>(Enumerable.Range(0, 3).Select(i => lateral_convs[i].forward(inputs[i])));
        var top = inputs[3];
        var pooled = new List<Tensor> { top };
        pooled.AddRange(psp_modules.Select(module => Resize(module.forward(top), top.shape[2], top.shape[3])));
        laterals.Add(bottleneck.forward(cat(pooled, 1)));
        for (int i = 3; i > 0; i--)
            laterals[i - 1] = laterals[i - 1] + Resize(laterals[i], laterals[i - 1].shape[2], laterals[i - 1].shape[3]);
        var outputs = new List<Tensor>(Enumerable.Range(0, 3).Select(i => fpn_convs[i].forward(laterals[i]))) { laterals[3] };
        for (int i = 1; i < 4; i++) outputs[i] = Resize(outputs[i], outputs[0].shape[2], outputs[0].shape[3]);
        return fpn_bottleneck.forward(cat(outputs, 1));
    }

    private static Tensor Resize(Tensor x, long height, long width) =>
        x.shape[2] == height && x.shape[3] == width ? x : functional.interpolate(x, size: [height, width], mode: InterpolationMode.Bilinear, align_corners: false);

    private static Sequential ConvModule(int input, int output, int kernel) =>
        Sequential(Conv2d(input, output, kernel, padding: kernel / 2, bias: false), BatchNorm2d(output), ReLU());

    private void Initialize(long seed)
    {
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var (name, module) in named_modules())
            switch (module)
            {
                case Conv2d conv when conv == conv_seg || conv == auxiliary_seg:
                    using (var w = randn(conv.weight!.shape, generator: generator)) conv.weight.copy_(w * 0.01);
                    conv.bias!.zero_();
                    break;
                case Conv2d conv:
                    double std = Math.Sqrt(2.0 / (conv.weight!.shape[0] * conv.weight.shape[2] * conv.weight.shape[3]));
                    using (var w = randn(conv.weight.shape, generator: generator)) conv.weight.copy_(w * std);
                    break;
                case ConvTranspose2d deconv:
                    double bound = 1 / Math.Sqrt(deconv.weight!.shape[1] * deconv.weight.shape[2] * deconv.weight.shape[3]);
                    using (var w = rand(deconv.weight.shape, generator: generator)) deconv.weight.copy_((w * 2 - 1) * bound);
                    using (var b = rand(deconv.bias!.shape, generator: generator)) deconv.bias.copy_((b * 2 - 1) * bound);
                    break;
                case BatchNorm2d norm:
                    norm.weight!.fill_(1);
                    norm.bias!.zero_();
                    break;
            }
    }
}
