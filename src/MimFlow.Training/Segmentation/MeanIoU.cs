namespace MimFlow.Training.Segmentation;

/// <summary>One class's row of the IoU table: pixels of the class in the truth, predicted as it, and both.</summary>
/// <param name="Iou">intersection / union; NaN when the class is absent from both truth and prediction.</param>
/// <param name="Accuracy">intersection / truth pixels (mmseg's per-class "Acc"); NaN without truth pixels.</param>
public sealed record ClassIou(int Class, string Name, long TruthPixels, long PredictedPixels, long Intersection, double Iou, double Accuracy);

/// <param name="MeanIou">Mean of the per-class IoU over classes present in the truth or the prediction (mmseg's nanmean).</param>
/// <param name="PixelAccuracy">Correct labelled pixels / labelled pixels (ignored pixels excluded; mmseg's aAcc).</param>
/// <param name="Loss">Mean pixel cross-entropy over labelled pixels, NaN when not measured.</param>
public sealed record SegmentationMetrics(int Images, long LabelledPixels, double MeanIou, double PixelAccuracy, double MeanAccuracy, double Loss,
    IReadOnlyList<ClassIou> PerClass, int Quarantined);

/// <summary>
/// Mean intersection-over-union from a K × K confusion matrix (truth × prediction), as mmseg's
/// <c>intersect_and_union</c> / <c>mean_iou</c>: pixels whose truth is the ignore index are skipped, and a class with
/// an empty union (absent from truth and prediction alike) has no IoU and is left out of the mean rather than counted
/// as 0 or 1 — otherwise the 150 ADE20K classes a small validation set never shows would swamp the mean.
/// Accumulated over the whole split (not averaged per image), as the benchmark defines it.
/// </summary>
public sealed class MeanIoU
{
    private readonly long[] confusion;
    private double lossSum;
    private long lossPixels;

    public MeanIoU(int classes, byte ignoreIndex = 255)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        if (classes > ignoreIndex) throw new ArgumentOutOfRangeException(nameof(classes), classes, $"class indices must stay below the ignore index {ignoreIndex}");
        Classes = classes;
        IgnoreIndex = ignoreIndex;
        confusion = new long[classes * classes];
    }

    public int Classes { get; }
    public byte IgnoreIndex { get; }
    public int Images { get; private set; }

    /// <summary>Confusion count of truth <paramref name="truth"/> predicted as <paramref name="predicted"/>.</summary>
    public long this[int truth, int predicted] => confusion[truth * Classes + predicted];

    /// <summary>Adds one or more images' pixels (same length, same order).</summary>
    /// <param name="predicted">Predicted class per pixel, in [0, K).</param>
    /// <param name="truth">Truth per pixel, in [0, K) or the ignore index.</param>
    public void Add(ReadOnlySpan<long> predicted, ReadOnlySpan<byte> truth, int images = 1)
    {
        if (predicted.Length != truth.Length) throw new ArgumentException($"{predicted.Length} predictions for {truth.Length} truth pixels");
        for (int i = 0; i < truth.Length; i++)
        {
            int t = truth[i];
            if (t == IgnoreIndex) continue;
            long p = predicted[i];
            if (t >= Classes) throw new ArgumentException($"truth label {t} at pixel {i} is neither a class in [0, {Classes}) nor the ignore index {IgnoreIndex}");
            if ((ulong)p >= (ulong)Classes) throw new ArgumentException($"prediction {p} at pixel {i} is not a class in [0, {Classes})");
            confusion[t * Classes + (int)p]++;
        }
        Images += images;
    }

    /// <summary>Adds a summed cross-entropy over <paramref name="pixels"/> labelled pixels (for the mean loss).</summary>
    public void AddLoss(double sum, long pixels)
    {
        lossSum += sum;
        lossPixels += pixels;
    }

    /// <param name="names">Class names in index order (missing names read as the index).</param>
    public SegmentationMetrics Result(IReadOnlyList<string> names, int quarantined = 0)
    {
        var rows = new List<ClassIou>(Classes);
        long correct = 0, labelled = 0;
        for (int c = 0; c < Classes; c++)
        {
            long truth = 0, predicted = 0;
            for (int j = 0; j < Classes; j++)
            {
                truth += confusion[c * Classes + j];
                predicted += confusion[j * Classes + c];
            }
            long intersection = confusion[c * Classes + c];
            long union = truth + predicted - intersection;
            correct += intersection;
            labelled += truth;
            rows.Add(new ClassIou(c, c < names.Count ? names[c] : c.ToString(System.Globalization.CultureInfo.InvariantCulture), truth, predicted, intersection,
                union == 0 ? double.NaN : (double)intersection / union, truth == 0 ? double.NaN : (double)intersection / truth));
        }
        static double NanMean(IEnumerable<double> values)
        {
            var present = values.Where(v => !double.IsNaN(v)).ToList();
            return present.Count == 0 ? double.NaN : present.Average();
        }
        return new SegmentationMetrics(Images, labelled, NanMean(rows.Select(r => r.Iou)), labelled == 0 ? double.NaN : (double)correct / labelled,
            NanMean(rows.Select(r => r.Accuracy)), lossPixels == 0 ? double.NaN : lossSum / lossPixels, rows, quarantined);
    }
}
