using MimFlow.Data.Augment;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;

namespace MimFlow.Data.Previews;

/// <summary>What <c>mimflow datasets preview</c> draws: the first training batch of a dataset as the model will see it.</summary>
public sealed record PreviewRequest(SampleIndex Data, string OutputPath)
{
    public int BatchSize { get; init; } = 16;
    public ulong Seed { get; init; }
}

/// <summary>
/// The first batch of the training recipe as a PNG: pretraining views with BEiT's blockwise masks, or, for data with
/// label maps, segmentation crops beside their label maps. Returns what was drawn, in a line.
/// </summary>
public static class BatchPreview
{
    public static Task<string> WriteAsync(PreviewRequest request, CancellationToken cancellationToken = default)
    {
        if (request.BatchSize < 1) throw new ArgumentException($"the preview batch must be at least 1 (got {request.BatchSize})");
        return request.Data.HasAnnotations ? SegmentationAsync(request, cancellationToken) : MaskedAsync(request, cancellationToken);
    }

    private static async Task<string> MaskedAsync(PreviewRequest request, CancellationToken cancellationToken)
    {
        var loader = new DataflowLoader(request.Data, new PretrainRecipe(),
            new LoaderOptions { BatchSize = request.BatchSize, Seed = request.Seed, Format = PixelFormat.UInt8, Masks = new BlockwiseMaskGenerator(14, 14, 75) });
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var rows = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), batch.Views[0].Width, (byte[]?)batch.Mask(r).ToArray()))
                    .ToList();
                MaskPreview.WriteMaskedImages(rows, request.OutputPath);
                double masked = Enumerable.Range(0, batch.Count).Average(r => batch.Mask(r).ToArray().Count(b => b == 1));
                return $"{batch.Count} pretraining views {batch.Views[0].Width}×{batch.Views[0].Height} with blockwise masks: {masked:F1} of 196 patches masked on average";
            }
        throw new InvalidDataException($"{request.Data.Root}: no decodable training image to preview");
    }

    private static async Task<string> SegmentationAsync(PreviewRequest request, CancellationToken cancellationToken)
    {
        var loader = new DataflowLoader(request.Data, new SegmentationRecipe(CropSize: 256, LongScale: 1024, ShortScale: 256),
            new LoaderOptions { BatchSize = request.BatchSize, Seed = request.Seed, Format = PixelFormat.UInt8 });
        await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            using (batch)
            {
                int bytes = batch.Views[0].Bytes;
                var samples = Enumerable.Range(0, batch.Count)
                    .Select(r => (batch.ViewBytes(0).Slice(r * bytes, bytes).ToArray(), batch.Views[0].Width, batch.LabelMap(r).ToArray()))
                    .ToList();
                MaskPreview.WriteSegmentation(samples, request.OutputPath);
                double ignored = samples.Average(s => s.Item3.Count(v => v == SegmentationRecipe.Ignore) / (double)s.Item3.Length);
                return $"{batch.Count} ADE20K crops {batch.Views[0].Width}×{batch.Views[0].Height} with label maps (reduced labels, {ignored:P0} ignored incl. padding)";
            }
        throw new InvalidDataException($"{request.Data.Root}: no decodable training image to preview");
    }
}
