using System.Diagnostics;
using MimFlow.Data.Decoding;
using MimFlow.Data.Sources;
using MimFlow.Data.Checks;

namespace MimFlow.Data.Checks;

/// <summary>What <c>mimflow datasets check</c> decodes.</summary>
/// <param name="Data">A folder (every JPEG/PNG below it), or with <see cref="Layout"/> a dataset in that layout.</param>
public sealed record DatasetCheckRequest(string Data)
{
    public DatasetLayout? Layout { get; init; }
    public DatasetSplit Split { get; init; } = DatasetSplit.Train;

    /// <summary>Largest value a label map may hold (ADE20K: 150).</summary>
    public int MaxLabel { get; init; } = Sources.Layouts.Ade20kLayout.ClassCount;

    /// <summary>Samples decoded in parallel (with a layout).</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;
}

/// <summary>
/// <c>mimflow datasets check</c> over a listed dataset in any storage form (tar members, Parquet rows, files): every
/// image decoded to its last pixel and every label map checked, as <see cref="DecodeCheck"/> does for a folder of
/// files. Failures name the sample (for archives: shard and key or row).
/// </summary>
public static class DatasetCheck
{
    /// <summary><c>mimflow datasets check</c>: a folder's files, or with a layout a dataset's samples.</summary>
    public static async Task<DecodeCheckResult> RunAsync(DatasetCheckRequest request, CancellationToken cancellationToken = default)
    {
        if (request.Layout is not { } layout)
        {
            if (!Directory.Exists(request.Data)) throw new DirectoryNotFoundException($"{request.Data}: no such folder");
            return DecodeCheck.Run(request.Data, request.MaxLabel, cancellationToken);
        }
        var index = DatasetSource.Open(request.Data, layout, request.Split);
        return await RunAsync(index, request.MaxLabel, request.Workers, cancellationToken);
    }

    public static async Task<DecodeCheckResult> RunAsync(SampleIndex index, int maxLabel, int workers, CancellationToken cancellationToken = default)
    {
        var watch = Stopwatch.StartNew();
        int images = 0, labelMaps = 0, highest = 0;
        var failures = new DecodeFailure?[index.Count];
        var gate = new Lock();
        // Order is the listing's, whatever finishes first: failures are collected by position.
        await Parallel.ForAsync(0, index.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, workers), CancellationToken = cancellationToken }, async (i, token) =>
        {
            var sample = index[i];
            try
            {
                byte[] image = await index.ReadImageAsync(sample, token);
                if (DecodeCheck.CheckImage(image) is { } bad)
                {
                    failures[i] = new DecodeFailure(sample.RelativePath, index.Located(sample, bad));
                    return;
                }
                Interlocked.Increment(ref images);
                if (await index.ReadAnnotationAsync(sample, token) is not { } annotation) return;
                int seen = 0;
                if (DecodeCheck.CheckLabelMap(annotation, maxLabel, ref seen) is { } badMap)
                {
                    failures[i] = new DecodeFailure(sample.AnnotationRelativePath ?? sample.RelativePath, index.Located(sample, badMap));
                    return;
                }
                Interlocked.Increment(ref labelMaps);
                lock (gate) highest = Math.Max(highest, seen);
            }
            catch (BadImageException e)
            {
                failures[i] = new DecodeFailure(sample.RelativePath, e.Reason);
            }
        });
        return new DecodeCheckResult(images, labelMaps, highest, failures.OfType<DecodeFailure>().ToList(), watch.Elapsed);
    }
}
