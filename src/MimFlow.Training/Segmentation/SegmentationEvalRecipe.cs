using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// Single-scale evaluation view of a labelled image: the shorter side resized to <see cref="CropSize"/> (image
/// bilinear, labels nearest and reduced as in training: 0 → 255, k → k − 1) and the centre <see cref="CropSize"/>²
/// square kept, so the model sees the scale it trained at (the training recipe's ShortScale equals the crop size) and
/// one fixed-size batch serves every image.
/// <para>
/// A simplification: BEiT/mmseg evaluate every pixel of the original-resolution map with a 512-stride-341 sliding
/// window over the (2048, 512)-rescaled image. The centre crop scores the middle square of each image only (all of a
/// square image; the middle of a landscape one), at crop resolution.
/// </para>
/// </summary>
public sealed record SegmentationEvalRecipe(int CropSize = 512, bool ReduceZeroLabel = true) : ILabelMapRecipe
{
    public string Name => "segmentation-eval";

    public IReadOnlyList<ViewShape> Views => [new ViewShape(CropSize, CropSize)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random) => Draw(header);

    public AugmentParams Draw(ImageHeader header, LabelMap labels, ref StableRandom random) => Draw(header);

    private AugmentParams Draw(ImageHeader header)
    {
        double side = Math.Min(header.Width, header.Height);
        var crop = new CropBox((header.Width - side) / 2, (header.Height - side) / 2, side, side);
        return AugmentParams.Of(new ViewParams(crop, CropSize, CropSize, ResampleKernel.Bilinear, false, []));
    }

    /// <summary>Nearest-neighbour labels of the crop, as the training recipe renders them (pixel centres).</summary>
    public void RenderLabels(LabelMap labels, AugmentParams parameters, Span<byte> target) =>
        new SegmentationRecipe(CropSize, ReduceZeroLabel: ReduceZeroLabel).RenderLabels(labels, parameters, target);
}
