using System.Runtime.CompilerServices;
using MimFlow.Data.Augment;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Training.Distributed;
using MimFlow.Training.Feeding;
using MimFlow.Training.Objectives;
using static TorchSharp.torch;

namespace MimFlow.Training.Pretraining;

/// <summary>One step's input on the device, with the loss it gives under the run's objective.</summary>
/// <param name="ResumePosition">Where the input continues after this batch within its epoch, in the input's own unit
/// (the shard feeder counts batches; the data pipeline counts samples of the epoch order, since refused images make
/// batches and samples diverge).</param>
/// <param name="Loss">The loss under a given objective: the run's own, or its bf16 compute copy (inputs are cast to the
/// objective's parameter type).</param>
internal sealed record StepBatch(int Epoch, long Number, int Count, Func<IMimObjective, ObjectiveLoss> Loss, IDisposable Owner, long ResumePosition) : IDisposable
{
    public void Dispose() => Owner.Dispose();
}

/// <summary>Where a pretraining run's batches come from: epoch after epoch, resumable at any batch.</summary>
internal interface IPretrainingInput
{
    long BatchesPerEpoch { get; }

    /// <param name="resumePosition">A <see cref="StepBatch.ResumePosition"/> of <paramref name="firstEpoch"/> (0: its start).</param>
    IAsyncEnumerable<StepBatch> ReadAsync(int firstEpoch, long resumePosition, Device device, CancellationToken cancellationToken);
}

/// <summary>Shard objectives (BEiT, BEiT v2, MaskDistill): pre-tokenized shards through the <see cref="ShardFeeder"/>.</summary>
internal sealed class ShardInput(ShardFeeder feeder) : IPretrainingInput
{
    public long BatchesPerEpoch => feeder.BatchesPerEpoch;

    public async IAsyncEnumerable<StepBatch> ReadAsync(int firstEpoch, long resumePosition, Device device, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var batches = feeder.ReadEpochsAsync(firstEpoch, resumePosition, cancellationToken);
        await foreach (var batch in DevicePrefetcher.ToDeviceAsync(batches, device, cancellationToken))
            yield return new StepBatch(batch.Epoch, batch.Number, batch.Count, target => Loss(target, batch), batch, batch.Number + 1);
    }

    private static ObjectiveLoss Loss(IMimObjective target, DeviceBatch batch)
    {
        var objective = target as IShardObjective ?? throw new InvalidOperationException($"{target.Name} does not train from shards");
        var dtype = target.Backbone.parameters().First().dtype;
        using var pixels = batch.Pixels.to(dtype);
        return objective.Loss(pixels, batch.Masks, new ShardTargets(batch.Codes, batch.Features));
    }
}

/// <summary>
/// Multi-crop objectives (iBOT): views straight from the data pipeline (2 global crops at the backbone's size, masked
/// with iBOT's random ratio masks, and local crops at 96/224 of it), ImageNet-normalised on the device; the objective
/// is told the fractional epoch (its teacher temperatures follow it).
/// </summary>
internal sealed class MultiCropInput : IPretrainingInput
{
    private readonly SampleIndex index;
    private readonly IMultiCropObjective objective;
    private readonly MultiCropRecipe recipe;
    private readonly LoaderOptions options;
    private readonly BatchSlice rows;

    /// <param name="rows">This process's rows of each global batch of <paramref name="batchSize"/>.</param>
    public MultiCropInput(SampleIndex index, IMultiCropObjective objective, int batchSize, int localCrops, ulong seed, int decodeWorkers, BatchSlice rows)
    {
        this.rows = rows;
        this.index = index;
        this.objective = objective;
        var config = objective.Backbone.Config;
        int local = Math.Max(config.PatchSize, (int)Math.Round(config.ImgSize * 96.0 / 224 / config.PatchSize) * config.PatchSize);
        recipe = new MultiCropRecipe(GlobalSize: config.ImgSize, LocalCrops: localCrops, LocalSize: local);
        options = new LoaderOptions
        {
            BatchSize = batchSize, Seed = seed, Format = PixelFormat.UInt8, Masks = new IbotMaskGenerator(config.GridSize, config.GridSize),
            MaskedViews = 2, KeepPartialBatch = false, DecodeWorkers = decodeWorkers,
        };
    }

    public long BatchesPerEpoch => index.Count / options.BatchSize;

    public async IAsyncEnumerable<StepBatch> ReadAsync(int firstEpoch, long resumePosition, Device device, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        for (int epoch = firstEpoch; ; epoch++)
        {
            var epochOptions = options with { Epoch = epoch };
            int skip = epoch == firstEpoch ? (int)resumePosition : 0;
            // Consumed samples are dropped from the epoch order before anything is read or decoded.
            int[] full = new DataflowLoader(index, recipe, epochOptions).EpochOrder();
            var positionOf = new Dictionary<int, int>(full.Length);
            for (int i = 0; i < full.Length; i++) positionOf[full[i]] = i;
            var remaining = full[Math.Min(skip, full.Length)..];
            // Data parallelism: this rank's rows of each global batch laid end to end, read in batches of its row count.
            // (A refused image shifts this rank's later rows by one, where the single-process run would shift the batch.)
            var loader = rows.IsWhole
                ? new DataflowLoader(index, recipe, epochOptions with { Samples = remaining })
                : new DataflowLoader(index, recipe, epochOptions with { Samples = rows.TakeFrom(remaining), BatchSize = rows.Count });
            long number = skip / options.BatchSize;
            long produced = 0;
            await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            {
                produced++;
                using (batch)
                {
                    var tensors = Upload(batch, device);
                    double fractionalEpoch = epoch + (double)number / Math.Max(1, BatchesPerEpoch);
                    long next = rows.IsWhole ? positionOf[batch.Samples[batch.Count - 1].Index] + 1 : skip + produced * options.BatchSize;
                    yield return new StepBatch(epoch, number++, batch.Count,
                        _ => objective.Loss(tensors.Globals, tensors.Masks, tensors.Locals, fractionalEpoch), tensors, next);
                }
            }
            // Every image refused (quarantined): the next epoch would give nothing too.
            if (produced == 0 && (epoch != firstEpoch || skip == 0))
                throw new InvalidDataException($"{index.Root}: epoch {epoch} gave no batch of {options.BatchSize}: every image was refused (see the quarantine) or too few remain");
        }
    }

    private sealed record Views(Tensor[] Globals, Tensor[] Masks, Tensor[] Locals) : IDisposable
    {
        public void Dispose()
        {
            foreach (var tensor in Globals.Concat(Masks).Concat(Locals)) tensor.Dispose();
        }
    }

    /// <summary>The batch's views on the device; the intermediates are disposed here, the views by the step.</summary>
    private static Views Upload(Batch batch, Device device)
    {
        using var scope = NewDisposeScope();
        var mean = tensor(PixelNormalizer.ImageNetMean.ToArray(), [1, 3, 1, 1]).to(device);
        var std = tensor(PixelNormalizer.ImageNetStd.ToArray(), [1, 3, 1, 1]).to(device);
        Tensor View(int v)
        {
            var shape = batch.Views[v];
            using var raw = tensor(batch.ViewBytes(v).ToArray(), [batch.Count, 3, shape.Height, shape.Width]).to(device);
            return (raw.to(ScalarType.Float32) / 255f - mean) / std;
        }
        Tensor Mask(int v)
        {
            var cells = new byte[batch.Count * batch.MaskCells];
            for (int r = 0; r < batch.Count; r++) batch.Mask(r, v).CopyTo(cells.AsSpan(r * batch.MaskCells));
            return tensor(cells, [batch.Count, batch.MaskCells]).to(device).to(ScalarType.Bool);
        }
        var views = new Views([View(0), View(1)], [Mask(0), Mask(1)], Enumerable.Range(2, batch.Views.Count - 2).Select(View).ToArray());
        foreach (var tensor in views.Globals.Concat(views.Masks).Concat(views.Locals)) tensor.MoveToOuterDisposeScope();
        return views;
    }
}
