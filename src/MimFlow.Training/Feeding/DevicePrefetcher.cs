using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Feeding;

/// <summary>A batch on the training device: pixels [B, 3, S, S] (float32, or the compute type), masks [B, N] bool, codes [B, N] int64, features [B, N, D].</summary>
public sealed class DeviceBatch(Tensor pixels, Tensor masks, Tensor codes, Tensor? features, Tensor labels, int epoch, long number) : IDisposable
{
    public Tensor Pixels { get; } = pixels;
    public Tensor Masks { get; } = masks;
    public Tensor Codes { get; } = codes;
    public Tensor? Features { get; } = features;
    public Tensor Labels { get; } = labels;
    public int Epoch { get; } = epoch;
    public long Number { get; } = number;
    public int Count => (int)Pixels.shape[0];

    public void Dispose()
    {
        Pixels.Dispose();
        Masks.Dispose();
        Codes.Dispose();
        Features?.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// Moves host batches to the device ahead of use: on CUDA each batch is pinned and copied without blocking, and
/// <see cref="Ahead"/> batches are in flight while the current one trains (TorchSharp has no streams: copies queue
/// on the default stream, before the compute that needs them, so order is kept and the host never waits for them).
/// </summary>
public static class DevicePrefetcher
{
    public const int Ahead = 2;

    public static async IAsyncEnumerable<DeviceBatch> ToDeviceAsync(IAsyncEnumerable<TrainingBatch> batches, Device device,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var queue = new Queue<DeviceBatch>();
        try
        {
            await foreach (var batch in batches.WithCancellation(cancellationToken))
            {
                // The tensors hold copies: the host arrays go back to the feeder for a later batch.
                using (batch) queue.Enqueue(Upload(batch, device));
                if (queue.Count > Ahead) yield return queue.Dequeue();
            }
            while (queue.Count > 0) yield return queue.Dequeue();
        }
        finally
        {
            while (queue.Count > 0) queue.Dequeue().Dispose();
        }
    }

    public static DeviceBatch Upload(TrainingBatch batch, Device device)
    {
        bool cuda = device.type == DeviceType.CUDA;
        Tensor Move(Tensor host)
        {
            if (!cuda) return host;
            using (host)
            using (var pinned = host.pin_memory())
                return pinned.to(device, non_blocking: true);
        }
        int b = batch.Count, s = batch.Side, n = batch.Cells;
        var pixels = Move(tensor(batch.Pixels, [b, 3, s, s]));
        var masks = Move(tensor(batch.Masks, [b, n]).to(ScalarType.Bool));
        var codes = Move(tensor(batch.Codes, [b, n]));
        Tensor? features = batch.FeatureValues > 0 ? Move(tensor(batch.Features, [b, batch.FeatureTokens, batch.FeatureDim])) : null;
        var labels = Move(tensor(batch.Labels.Select(l => (long)l).ToArray(), [b]));
        return new DeviceBatch(pixels, masks, codes, features, labels, batch.Epoch, batch.Number);
    }
}
