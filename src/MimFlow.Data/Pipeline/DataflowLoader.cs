using System.Buffers;
using System.Runtime.CompilerServices;
using System.Threading.Tasks.Dataflow;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Sources;

namespace MimFlow.Data.Pipeline;

/// <summary>
/// The CPU data graph: epoch order → read bytes (async, bounded, retried) → decode + augment (NetVips, one worker
/// per core) → collate into pooled batch buffers → bounded prefetch queue → the consumer's <c>await foreach</c>.
/// Every block is bounded (<see cref="LoaderOptions.MaxSamplesInFlight"/>), order is preserved so batches are the
/// same on every run, and bad inputs go to the quarantine log instead of the batch.
/// </summary>
public sealed class DataflowLoader(SampleIndex index, IAugmentRecipe recipe, LoaderOptions options, QuarantineLog? quarantine = null)
{
    /// <summary>Samples rendered so far (bad ones excluded).</summary>
    public int RenderedCount => rendered;

    /// <summary>Where refused inputs go: the given log, or one kept in memory.</summary>
    public QuarantineLog Quarantine { get; } = quarantine ?? new QuarantineLog(null);

    private int rendered;

    private readonly LoaderBuffers pools = new(recipe.Views, options);

    /// <summary>The sample order of the epoch: a seeded permutation, or listing order.</summary>
    public int[] EpochOrder()
    {
        if (options.Samples is { } explicitOrder) return explicitOrder.ToArray();
        int[] order = Enumerable.Range(0, index.Count).ToArray();
        if (options.Shuffle)
        {
            var random = StableRandom.For(options.Seed, "epoch-order", (ulong)options.Epoch);
            random.Shuffle(order);
        }
        return options.Limit is int limit && limit < order.Length ? order[..limit] : order;
    }

    /// <summary>The augmentation of sample <paramref name="sampleIndex"/> in this epoch, drawn from its header (and its
    /// label map, for segmentation recipes).</summary>
    public AugmentParams DrawParams(ImageHeader header, int sampleIndex, LabelMap? labels = null)
    {
        var random = StableRandom.For(options.Seed, "augment", (ulong)options.Epoch, (ulong)sampleIndex);
        if (recipe is ILabelMapRecipe segmentation)
            return segmentation.Draw(header, labels ?? throw new BadImageException($"the {recipe.Name} recipe needs an annotation for every image"), ref random);
        return recipe.Draw(header, ref random);
    }

    /// <summary>The mask of view <paramref name="view"/> of sample <paramref name="sampleIndex"/> in this epoch.</summary>
    public PatchMask? DrawMask(int sampleIndex, int view = 0)
    {
        if (options.Masks is null) return null;
        var random = StableRandom.For(options.Seed, "mask", (ulong)options.Epoch, (ulong)sampleIndex, (ulong)view);
        return options.Masks.Next(ref random);
    }

    private PatchMask[]? DrawMasks(int sampleIndex) =>
        options.Masks is null ? null : Enumerable.Range(0, options.MaskedViews).Select(v => DrawMask(sampleIndex, v)!).ToArray();

    public async IAsyncEnumerable<Batch> ReadEpochAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options.Validate();
        LibvipsSettings.ForGraphParallelism();
        var reader = new SampleReader(options.ReadRetries, options.Limits);
        var views = recipe.Views;
        int maskCells = options.Masks is { } generator ? generator.Height * generator.Width : 0;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var token = linked.Token;

        var read = new TransformBlock<int, Encoded>(
            async i =>
            {
                var sample = index[i];
                try
                {
                    byte[] bytes = await index.ReadImageAsync(sample, reader, token);
                    byte[]? annotation = await index.ReadAnnotationAsync(sample, reader, token);
                    return new Encoded(sample, bytes, annotation, null);
                }
                catch (BadImageException e)
                {
                    return new Encoded(sample, null, null, new QuarantineEntry(sample.RelativePath, e.Reason, "read", sample.Index));
                }
            },
            new ExecutionDataflowBlockOptions
            {
                MaxDegreeOfParallelism = options.ReadConcurrency, BoundedCapacity = 2 * options.ReadConcurrency,
                EnsureOrdered = true, CancellationToken = token,
            });

        var decode = new TransformBlock<Encoded, RenderedSample>(
            encoded => Render(encoded, views),
            new ExecutionDataflowBlockOptions
            {
                MaxDegreeOfParallelism = options.DecodeWorkers, BoundedCapacity = 2 * options.DecodeWorkers,
                EnsureOrdered = true, CancellationToken = token, SingleProducerConstrained = true,
            });

        var ready = new BufferBlock<Batch>(new DataflowBlockOptions { BoundedCapacity = options.PrefetchBatches, CancellationToken = token });
        Batch? filling = null;
        int batchNumber = 0;
        var collate = new ActionBlock<RenderedSample>(
            async item =>
            {
                if (item.Failure is not null)
                {
                    Quarantine.Add(item.Failure);
                    return;
                }
                filling ??= new Batch(pools, options.BatchSize, views, options.Format, maskCells, options.MaskedViews, recipe is ILabelMapRecipe ? LabelMapBytes(views) : 0) { Number = batchNumber++ };
                Collate(filling, item, views);
                if (filling.Count == options.BatchSize)
                {
                    var full = filling;
                    filling = null;
                    if (!await ready.SendAsync(full, token)) full.Dispose();
                }
            },
            new ExecutionDataflowBlockOptions { MaxDegreeOfParallelism = 1, BoundedCapacity = options.BatchSize, CancellationToken = token });

        var link = new DataflowLinkOptions { PropagateCompletion = true };
        read.LinkTo(decode, link);
        decode.LinkTo(collate, link);
        var finished = collate.Completion.ContinueWith(async completed =>
        {
            if (completed.IsCompletedSuccessfully && filling is { Count: > 0 } last)
            {
                filling = null;
                if (!options.KeepPartialBatch || !await ready.SendAsync(last, token)) last.Dispose();
            }
            if (completed.Exception is { } error) ((IDataflowBlock)ready).Fault(error.GetBaseException());
            else ready.Complete();
        }, TaskScheduler.Default).Unwrap();

        var feed = Task.Run(async () =>
        {
            try
            {
                foreach (int i in EpochOrder())
                    if (!await read.SendAsync(i, token)) break;
            }
            finally
            {
                read.Complete();
            }
        }, token);

        try
        {
            await foreach (var batch in ready.ReadAllAsync(token)) yield return batch;
            await feed;
            await finished;
        }
        finally
        {
            // Leaving early (break, exception, cancellation) stops every block; buffers still queued go back to the pool.
            linked.Cancel();
            while (ready.TryReceive(out var unread)) unread.Dispose();
        }
    }

    /// <summary>Decode-worker side: render the views, and for float batches normalise them here, in parallel,
    /// so the single collate step only copies.</summary>
    private RenderedSample Render(Encoded encoded, IReadOnlyList<ViewShape> views)
    {
        if (encoded.Failure is not null) return RenderedSample.Refused(encoded.Sample, encoded.Failure);
        byte[][] buffers = views.Select(v => pools.Bytes.Rent(v.Bytes)).ToArray();
        byte[]? labelBuffer = recipe is ILabelMapRecipe ? pools.Bytes.Rent(LabelMapBytes(views)) : null;
        try
        {
            var header = ImageHeader.Read(encoded.Bytes!, options.Limits);
            var labels = encoded.Annotation is { } annotation ? AnnotationCheck.Decode(annotation, header) : null;
            var parameters = DrawParams(header, encoded.Sample.Index, labels);
            Augmenter.Render(encoded.Bytes!, header, parameters, views,
                buffers.Select((b, v) => new Memory<byte>(b, 0, views[v].Bytes)).ToArray());
            if (recipe is ILabelMapRecipe segmentation) segmentation.RenderLabels(labels!, parameters, labelBuffer.AsSpan(0, LabelMapBytes(views)));
            float[][]? floats = null;
            if (options.Format == PixelFormat.Float32)
            {
                floats = new float[views.Count][];
                for (int v = 0; v < views.Count; v++)
                {
                    floats[v] = pools.Floats.Rent(views[v].Bytes);
                    var target = floats[v].AsSpan(0, views[v].Bytes);
                    PixelNormalizer.ToFloat(buffers[v].AsSpan(0, views[v].Bytes), target, imageNetStatistics: v == 0);
                    foreach (var erase in parameters.Erase)
                        if (erase.View == v) Augmenter.Erase(target, views[v], erase);
                    pools.Bytes.Return(buffers[v]);
                }
            }
            Interlocked.Increment(ref rendered);
            return new RenderedSample(encoded.Sample, floats is null ? buffers : null, floats, labelBuffer, parameters, DrawMasks(encoded.Sample.Index), null);
        }
        catch (BadImageException e)
        {
            foreach (var buffer in buffers) pools.Bytes.Return(buffer);
            if (labelBuffer is not null) pools.Bytes.Return(labelBuffer);
            return RenderedSample.Refused(encoded.Sample, new QuarantineEntry(encoded.Sample.RelativePath, index.Located(encoded.Sample, e.Reason), "decode", encoded.Sample.Index));
        }
    }

    private void Collate(Batch batch, RenderedSample item, IReadOnlyList<ViewShape> views)
    {
        int row = batch.Count;
        for (int v = 0; v < views.Count; v++)
        {
            int length = views[v].Bytes;
            if (item.Floats is { } floats)
            {
                floats[v].AsSpan(0, length).CopyTo(batch.Floats[v].AsSpan(row * length, length));
                pools.Floats.Return(floats[v]);
            }
            else
            {
                item.Bytes![v].AsSpan(0, length).CopyTo(batch.Bytes[v].AsSpan(row * length, length));
                pools.Bytes.Return(item.Bytes[v]);
            }
        }
        if (item.LabelMap is { } labelMap)
        {
            labelMap.AsSpan(0, batch.LabelMapCells).CopyTo(batch.LabelMaps.AsSpan(row * batch.LabelMapCells, batch.LabelMapCells));
            pools.Bytes.Return(labelMap);
        }
        batch.Labels[row] = item.Sample.Label;
        batch.Samples[row] = item.Sample;
        batch.Params[row] = item.Params!;
        if (item.Masks is { } masks)
            for (int m = 0; m < masks.Length; m++)
                masks[m].CopyTo(batch.Masks.AsSpan((row * masks.Length + m) * batch.MaskCells, batch.MaskCells));
        batch.Count = row + 1;
    }

    private sealed record Encoded(Sample Sample, byte[]? Bytes, byte[]? Annotation, QuarantineEntry? Failure);

    private static int LabelMapBytes(IReadOnlyList<ViewShape> views) => views[0].Width * views[0].Height;

    /// <summary>A rendered sample: planar views as bytes or (float batches) already normalised floats, all pooled.</summary>
    private sealed record RenderedSample(Sample Sample, byte[][]? Bytes, float[][]? Floats, byte[]? LabelMap, AugmentParams? Params, PatchMask[]? Masks, QuarantineEntry? Failure)
    {
        public static RenderedSample Refused(Sample sample, QuarantineEntry failure) => new(sample, null, null, null, null, null, failure);
    }
}
