using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;

namespace MimFlow.Training.Segmentation;

/// <summary>How a segmenter is scored on a labelled split.</summary>
public enum SegmentationEvalMode
{
    /// <summary>
    /// mmseg's (and BEiT's) test: keep-ratio rescale to (4·crop, crop), i.e. (2048, 512) at crop 512, then crop-sized
    /// windows at stride ⌊2/3·crop⌋ (341) over the whole image, overlapping logits averaged; every pixel is scored.
    /// </summary>
    Slide,

    /// <summary>Shorter side to the crop size and the centre square only: one forward per image (quick checks).</summary>
    CentreCrop,
}

/// <summary>
/// The evaluation view of a labelled image (labels nearest-neighbour and reduced as in training: 0 → 255, k → k − 1).
/// <see cref="SegmentationEvalMode.Slide"/>: the image rescaled keeping its ratio so the long side is at most 4·crop
/// and the short side at most the crop size (mmseg's Resize((2048, 512), keep_ratio)), placed top-left on a
/// (4·crop)² canvas padded with 0 and ignored labels, so one batch shape serves every image; the sliding window
/// (<see cref="SlidingWindows"/>) runs over the image's own extent. <see cref="SegmentationEvalMode.CentreCrop"/>:
/// the shorter side resized to the crop size and the centre square kept.
/// <para>
/// What still differs from mmseg: scores are counted at the rescaled resolution rather than after resizing the
/// logits back to the original image.
/// </para>
/// </summary>
public sealed record SegmentationEvalRecipe(int CropSize = 512, bool ReduceZeroLabel = true, SegmentationEvalMode Mode = SegmentationEvalMode.Slide) : ILabelMapRecipe
{
    public string Name => Mode == SegmentationEvalMode.Slide ? "segmentation-eval-slide" : "segmentation-eval";

    /// <summary>The side of the square the view is rendered into.</summary>
    public int CanvasSize => Mode == SegmentationEvalMode.Slide ? 4 * CropSize : CropSize;

    public IReadOnlyList<ViewShape> Views => [new ViewShape(CanvasSize, CanvasSize)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random) => Draw(header);

    public AugmentParams Draw(ImageHeader header, LabelMap labels, ref StableRandom random) => Draw(header);

    private AugmentParams Draw(ImageHeader header)
    {
        if (Mode == SegmentationEvalMode.Slide)
        {
            double factor = Math.Min(4.0 * CropSize / Math.Max(header.Width, header.Height), (double)CropSize / Math.Min(header.Width, header.Height));
            int width = Math.Min(CanvasSize, (int)(header.Width * factor + 0.5)), height = Math.Min(CanvasSize, (int)(header.Height * factor + 0.5));
            return AugmentParams.Of(new ViewParams(new CropBox(0, 0, header.Width, header.Height), width, height, ResampleKernel.Bilinear, false, [], PadValue: 0));
        }
        double side = Math.Min(header.Width, header.Height);
        var crop = new CropBox((header.Width - side) / 2, (header.Height - side) / 2, side, side);
        return AugmentParams.Of(new ViewParams(crop, CropSize, CropSize, ResampleKernel.Bilinear, false, []));
    }

    /// <summary>Nearest-neighbour labels of the view, as the training recipe renders them (pixel centres), on the canvas.</summary>
    public void RenderLabels(LabelMap labels, AugmentParams parameters, Span<byte> target) =>
        new SegmentationRecipe(CanvasSize, ReduceZeroLabel: ReduceZeroLabel).RenderLabels(labels, parameters, target);

    /// <summary>
    /// mmseg's slide_inference windows over an image of <paramref name="height"/>×<paramref name="width"/> (at least
    /// one crop in each direction; a smaller image is read with the canvas padding around it): top-left corners,
    /// stride ⌊2·crop/3⌋ (341 at 512), the last window in each direction flush with the edge.
    /// </summary>
    public static IReadOnlyList<(int Top, int Left)> SlidingWindows(int height, int width, int crop)
    {
        int stride = Math.Max(1, 2 * crop / 3);
        height = Math.Max(height, crop);
        width = Math.Max(width, crop);
        int rows = Math.Max(height - crop + stride - 1, 0) / stride + 1, columns = Math.Max(width - crop + stride - 1, 0) / stride + 1;
        var windows = new List<(int, int)>();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                windows.Add((Math.Max(Math.Min(r * stride + crop, height) - crop, 0), Math.Max(Math.Min(c * stride + crop, width) - crop, 0)));
        return windows;
    }
}
