using System.Buffers;
using System.Runtime.CompilerServices;
using MimFlow.Core.Randomness;
using MimFlow.Data.Decoding;

namespace MimFlow.Data.Augment;

/// <summary>A decoded label map: one byte a pixel, row-major, in display coordinates of its image.</summary>
public sealed record LabelMap(byte[] Labels, int Width, int Height);

/// <summary>A recipe that needs the sample's label map to draw (segmentation crops), and renders it too.</summary>
public interface ILabelMapRecipe : IAugmentRecipe
{
    AugmentParams Draw(ImageHeader header, LabelMap labels, ref StableRandom random);

    /// <summary>Renders the label map of view 0 into <paramref name="target"/> (the view shape), as training reads it.</summary>
    void RenderLabels(LabelMap labels, AugmentParams parameters, Span<byte> target);
}

/// <summary>
/// ADE20K semantic segmentation as BEiT's mmseg configuration trains it: keep-ratio rescale to (2048, 512) × r with
/// r uniform in [0.5, 2], random crop 512 × 512 re-drawn up to 10 times until no class covers more than 75% of the
/// labelled pixels (cat_max_ratio), flip 0.5, PhotoMetricDistortion (brightness ±32, contrast 0.5–1.5 before or after
/// the HSV step, saturation 0.5–1.5, hue ±18 OpenCV units, each with probability 0.5), pad to 512 with 0 (image) and
/// 255 (labels). Labels are resampled nearest-neighbour and reduced (0 → 255 ignored, k → k − 1).
/// Images are resampled bilinearly with antialiasing (mmseg's OpenCV resize does not antialias when shrinking).
/// </summary>
public sealed record SegmentationRecipe(int CropSize = 512, int LongScale = 2048, int ShortScale = 512, double MinRatio = 0.5, double MaxRatio = 2.0, double CatMaxRatio = 0.75, bool ReduceZeroLabel = true)
    : ILabelMapRecipe
{
    public const byte Ignore = 255;

    public string Name => "ade20k-segmentation";

    public IReadOnlyList<ViewShape> Views => [new ViewShape(CropSize, CropSize)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random) =>
        throw new InvalidOperationException("the segmentation recipe draws with the label map: call Draw(header, labels, random)");

    public AugmentParams Draw(ImageHeader header, LabelMap labels, ref StableRandom random)
    {
        double ratio = random.Uniform(MinRatio, MaxRatio);
        double longEdge = LongScale * ratio, shortEdge = ShortScale * ratio;
        double factor = Math.Min(longEdge / Math.Max(header.Width, header.Height), shortEdge / Math.Min(header.Width, header.Height));
        int resizedWidth = (int)(header.Width * factor + 0.5), resizedHeight = (int)(header.Height * factor + 0.5);
        double sx = (double)resizedWidth / header.Width, sy = (double)resizedHeight / header.Height;
        int cropWidth = Math.Min(CropSize, resizedWidth), cropHeight = Math.Min(CropSize, resizedHeight);

        CropBox box = DrawBox(ref random);
        for (int attempt = 0; attempt < 10 && CatMaxRatio < 1 && !Balanced(labels, box); attempt++) box = DrawBox(ref random);

        bool flip = random.NextBool(0.5);
        var distortion = DrawDistortion(ref random);
        return AugmentParams.Of(new ViewParams(box, cropWidth, cropHeight, ResampleKernel.Bilinear, flip, [distortion], PadValue: 0));

        CropBox DrawBox(ref StableRandom r)
        {
            int top = r.NextInt(0, resizedHeight - cropHeight), left = r.NextInt(0, resizedWidth - cropWidth);
            return new CropBox(left / sx, top / sy, cropWidth / sx, cropHeight / sy);
        }
    }

    /// <summary>mmseg's cat_max_ratio test on the crop's labels, ignoring label 0 ("other", reduced to 255).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool Balanced(LabelMap labels, CropBox box)
    {
        Span<int> counts = stackalloc int[256];
        int x0 = Math.Clamp((int)box.X, 0, labels.Width - 1), x1 = Math.Clamp((int)Math.Ceiling(box.Right), x0 + 1, labels.Width);
        int y0 = Math.Clamp((int)box.Y, 0, labels.Height - 1), y1 = Math.Clamp((int)Math.Ceiling(box.Bottom), y0 + 1, labels.Height);
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) counts[labels.Labels[y * labels.Width + x]]++;
        int ignored = ReduceZeroLabel ? 0 : Ignore;
        int classes = 0, total = 0, largest = 0;
        for (int label = 0; label < 256; label++)
        {
            if (label == ignored || counts[label] == 0) continue;
            classes++;
            total += counts[label];
            largest = Math.Max(largest, counts[label]);
        }
        return classes > 1 && (double)largest / total < CatMaxRatio;
    }

    private static PhotometricShift DrawDistortion(ref StableRandom random)
    {
        double? brightness = random.NextInt(2) == 1 ? random.Uniform(-32, 32) : null;
        bool contrastFirst = random.NextInt(2) == 1;
        double? contrast = random.NextInt(2) == 1 ? random.Uniform(0.5, 1.5) : null;
        double? saturation = random.NextInt(2) == 1 ? random.Uniform(0.5, 1.5) : null;
        double? hue = random.NextInt(2) == 1 ? 2.0 * random.NextInt(-18, 17) : null;
        return new PhotometricShift(brightness, contrast, contrastFirst, saturation, hue);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void RenderLabels(LabelMap labels, AugmentParams parameters, Span<byte> target)
    {
        var view = parameters.Views[0];
        target.Fill(Ignore);
        // Nearest neighbour: the source column of each output column (mirrored when flipped) once, the source row of
        // each output row once; an output row whose source row is the previous one's is a copy of it.
        Span<byte> reduce = stackalloc byte[256];
        for (int label = 0; label < 256; label++) reduce[label] = ReduceZeroLabel ? (label == 0 ? Ignore : (byte)(label - 1)) : (byte)label;
        int[]? rented = view.Width > 1024 ? ArrayPool<int>.Shared.Rent(view.Width) : null;
        Span<int> columns = rented is null ? stackalloc int[view.Width] : rented.AsSpan(0, view.Width);
        try
        {
            for (int x = 0; x < view.Width; x++)
            {
                int outX = view.Flip ? view.Width - 1 - x : x;
                columns[outX] = Math.Clamp((int)Math.Floor(view.Crop.X + (x + 0.5) * view.Crop.Width / view.Width), 0, labels.Width - 1);
            }
            int previousY = -1;
            for (int y = 0; y < view.Height; y++)
            {
                int sourceY = Math.Clamp((int)Math.Floor(view.Crop.Y + (y + 0.5) * view.Crop.Height / view.Height), 0, labels.Height - 1);
                var row = target.Slice(y * CropSize, view.Width);
                if (sourceY == previousY)
                {
                    target.Slice((y - 1) * CropSize, view.Width).CopyTo(row);
                    continue;
                }
                previousY = sourceY;
                var source = labels.Labels.AsSpan(sourceY * labels.Width, labels.Width);
                for (int x = 0; x < row.Length; x++) row[x] = reduce[source[columns[x]]];
            }
        }
        finally
        {
            if (rented is not null) ArrayPool<int>.Shared.Return(rented);
        }
    }
}
