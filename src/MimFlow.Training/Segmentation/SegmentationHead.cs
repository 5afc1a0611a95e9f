using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// Shape of <see cref="SegmentationHead"/>. Defaults are SETR-PUP's (mmseg <c>SETRUPHead</c>: 256 channels, 4
/// conv + 2× upsample stages, kernel 3), with GroupNorm of 32 groups in place of SyncBN.
/// </summary>
/// <param name="Channels">Width of every decoder stage.</param>
/// <param name="Stages">Conv3×3 + norm + ReLU + 2× upsample stages (4 = 16×, a 16-pixel patch's full resolution).</param>
/// <param name="Groups">GroupNorm groups; must divide <paramref name="Channels"/>.</param>
public sealed record SegmentationHeadConfig(int Channels = 256, int Stages = 4, int Groups = 32)
{
    public void Validate()
    {
        if (Channels < 1 || Stages < 0 || Groups < 1) throw new ArgumentException("head channels and groups must be positive, stages not negative");
        if (Channels % Groups != 0) throw new ArgumentException($"GroupNorm groups ({Groups}) must divide the head channels ({Channels})");
    }
}

/// <summary>
/// SETR's progressive upsampling decoder ("PUP", Zheng et al. 2021, mmseg <c>SETRUPHead</c>) over the backbone's final
/// patch tokens: LayerNorm on the tokens (SETRUPHead's <c>norm_layer</c>), reshape to [B, D, g, g], then per stage
/// conv3×3 → GroupNorm → ReLU → bilinear 2× upsample, a 1×1 conv to K classes, and a bilinear resize to the input.
/// <para>
/// Why this head: it needs only the last layer and a handful of convolutions, so it is small enough to train and
/// test on CPU. BEiT itself evaluates ADE20K with UperNet over four intermediate layers (3, 5, 7, 11) turned into a
/// feature pyramid by deconvolutions and pooling (unilm <c>semantic_segmentation/backbone/beit.py</c>); that
/// decoder is not built here, so mIoU figures are not comparable with the paper's. The norm is GroupNorm rather than
/// SETR's SyncBN because it does not depend on the batch: it behaves the same at batch 2 on CPU as at 16 on GPUs, and
/// training and evaluation compute the same function.
/// </para>
/// <para>
/// Initialisation follows mmseg/mmcv: the 3×3 convs Kaiming-normal (fan_out, ReLU) with zero bias (ConvModule), the
/// classifier normal(0, 0.01) with zero bias (<c>cls_seg</c>), norms 1/0. It is drawn from a seeded generator so a run
/// is a function of its seed.
/// </para>
/// </summary>
public sealed class SegmentationHead : DecodeHead
{
    private readonly LayerNorm norm;
    private readonly ModuleList<Conv2d> convs;
    private readonly ModuleList<GroupNorm> norms;
    private readonly Conv2d classifier;

    public SegmentationHead(int embedDim, int classes, SegmentationHeadConfig config, long seed) : base("SetrUpHead")
    {
        config.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        Config = config;
        Classes = classes;
        norm = LayerNorm(embedDim, 1e-6);
        convs = new ModuleList<Conv2d>(Enumerable.Range(0, config.Stages)
            .Select(i => Conv2d(i == 0 ? embedDim : config.Channels, config.Channels, 3, padding: 1)).ToArray());
        norms = new ModuleList<GroupNorm>(Enumerable.Range(0, config.Stages).Select(_ => GroupNorm(config.Groups, config.Channels)).ToArray());
        classifier = Conv2d(config.Stages == 0 ? embedDim : config.Channels, classes, 1);
        RegisterComponents();

        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var conv in convs)
        {
            double std = Math.Sqrt(2.0 / (conv.weight!.shape[0] * 9));
            using (var w = randn(conv.weight.shape, generator: generator)) conv.weight.copy_(w * std);
            conv.bias!.zero_();
        }
        // TorchSharp's GroupNorm leaves its affine parameters uninitialised (whatever the allocation held): set 1/0 explicitly.
        foreach (var groupNorm in norms)
        {
            groupNorm.weight!.fill_(1);
            groupNorm.bias!.zero_();
        }
        norm.weight!.fill_(1);
        norm.bias!.zero_();
        using (var w = randn(classifier.weight!.shape, generator: generator)) classifier.weight.copy_(w * 0.01);
        classifier.bias!.zero_();
    }

    public SegmentationHeadConfig Config { get; }

    public override int Classes { get; }

    /// <summary>The backbone's final, normed tokens.</summary>
    public override IReadOnlyList<int> Layers => [];

    public override Tensor forward(IReadOnlyList<Tensor> levels, long height, long width) => forward(levels[0], height, width);

    /// <param name="patches">[B, g·g, D] patch tokens ([CLS] removed), row-major over the grid.</param>
    /// <param name="height">Input height in pixels (the logits are resized to it).</param>
    /// <param name="width">Input width in pixels.</param>
    /// <returns>Logits [B, K, height, width].</returns>
    public Tensor forward(Tensor patches, long height, long width)
    {
        using var scope = NewDisposeScope();
        var x = ToGrid(norm.forward(patches));
        for (int i = 0; i < convs.Count; i++)
        {
            x = functional.relu(norms[i].forward(convs[i].forward(x)));
            x = functional.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Bilinear, align_corners: false);
        }
        x = classifier.forward(x);
        if (x.shape[2] != height || x.shape[3] != width)
            x = functional.interpolate(x, size: [height, width], mode: InterpolationMode.Bilinear, align_corners: false);
        return x.MoveToOuterDisposeScope();
    }
}
