using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Dataflow;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Shards;
using MimFlow.Training.Distributed;

namespace MimFlow.Training.Feeding;

/// <summary>How the feeder reads a shard set.</summary>
public sealed record FeederOptions
{
    public int BatchSize { get; init; } = 64;
    public ulong Seed { get; init; }

    /// <summary>Images held for shuffling within the shard stream (memory: this many rows).</summary>
    public int ShuffleBuffer { get; init; } = 1024;

    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;
    public int PrefetchBatches { get; init; } = 2;

    /// <summary>BEiT's blockwise masking (or another generator) over the tokenizer's grid; null: no masks.</summary>
    public IMaskGenerator? Masks { get; init; }

    /// <summary>
    /// The dataset the shards were tokenized from (any layout): each row's view is then replayed on its original image
    /// (the <c>path</c> column names it) instead of the stored one. Needed for shards stored without images.
    /// </summary>
    public SampleIndex? Originals { get; init; }

    /// <summary>How shard files are opened and transient I/O errors retried (each shard's hash and each row group is
    /// one retriable read); null: the defaults of <see cref="TransientIo"/>.</summary>
    public TransientIo? Io { get; init; }

    /// <summary>Data parallelism: this process's rank of <see cref="WorldSize"/>; it decodes and yields only its rows of every
    /// global batch of <see cref="BatchSize"/> (<see cref="BatchSlice.Of"/>), the same images the single-process run puts there.</summary>
    public int Rank { get; init; }

    public int WorldSize { get; init; } = 1;

    /// <summary>This process's rows of each global batch.</summary>
    public BatchSlice Rows => BatchSlice.Of(BatchSize, Rank, WorldSize);

    public void Validate()
    {
        _ = Rows;
        if (BatchSize < 1) throw new ArgumentException($"the batch size must be at least 1 (got {BatchSize})");
        if (ShuffleBuffer < 1) throw new ArgumentException("the shuffle buffer needs at least 1 image");
        if (DecodeWorkers < 1 || PrefetchBatches < 1) throw new ArgumentException("decode workers and prefetch must be at least 1");
    }
}

/// <summary>
/// A training batch on the host: normalised pixels [B, 3, S, S], masks [B, N] (1 = masked), codes [B, N], teacher
/// features [B, N, D] and labels, with the position it had in its epoch. Disposing it hands its arrays back to the
/// feeder that made it, which fills them again for a later batch (a 224² batch of 64 is 38 MB of pixels: allocating
/// one per step costs page faults, zeroing and collections); a batch that is not disposed is simply collected.
/// Nothing may read a batch after disposing it.
/// </summary>
public sealed class TrainingBatch(int count, int side, int cells, int featureTokens, int featureDim) : IDisposable
{
    private Action<TrainingBatch>? recycle;
    private int disposed;

    public int Count { get; } = count;
    public int Side { get; } = side;
    public int Cells { get; } = cells;
    public int FeatureTokens { get; } = featureTokens;
    public int FeatureDim { get; } = featureDim;
    public int FeatureValues => FeatureTokens * FeatureDim;
    public float[] Pixels { get; } = GC.AllocateUninitializedArray<float>(count * 3 * side * side);
    public byte[] Masks { get; } = new byte[count * cells];
    public long[] Codes { get; } = new long[count * cells];
    public float[] Features { get; } = GC.AllocateUninitializedArray<float>(count * featureTokens * featureDim);
    public int[] Labels { get; } = new int[count];
    public string[] SampleIds { get; } = new string[count];
    public int Epoch { get; private set; }

    /// <summary>0-based position of this batch in its epoch.</summary>
    public long Number { get; private set; }

    internal bool Fits(int count, int side, int cells, int featureTokens, int featureDim) =>
        Count == count && Side == side && Cells == cells && FeatureTokens == featureTokens && FeatureDim == featureDim;

    /// <summary>Readies the batch for its (next) use; <paramref name="recycle"/> takes it back when it is disposed.</summary>
    internal TrainingBatch Issue(int epoch, long number, Action<TrainingBatch>? recycle)
    {
        Epoch = epoch;
        Number = number;
        this.recycle = recycle;
        disposed = 0;
        return this;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0) recycle?.Invoke(this);
    }
}

/// <summary>
/// Reads pre-tokenized shards for pretraining: shard order shuffled per epoch, images shuffled within a bounded
/// buffer, one of the K stored views chosen per image and epoch, its augmentation replayed on the stored image (the
/// crop rescaled from source to stored pixels), ImageNet-normalised, a mask drawn, all decoded in parallel (ordered)
/// and collated into batches that are bounded in number. Everything random is a function of (seed, epoch, image), so
/// an epoch's batches are the same on every run and a run resumes exactly at batch n by skipping n batches before
/// any decoding.
/// </summary>
public sealed class ShardFeeder
{
    private readonly string directory;
    private readonly FeederOptions options;
    private readonly TransientIo io;

    public ShardFeeder(string shardDirectory, FeederOptions options)
    {
        options.Validate();
        directory = shardDirectory;
        this.options = options;
        io = options.Io ?? new TransientIo();
        Manifest = ShardManifest.Read(shardDirectory);
        if (!Manifest.Columns.Image && options.Originals is null)
            throw new ArgumentException($"{shardDirectory}: the shards hold no images (tokenized without --store-image): give --data with the dataset they were " +
                                        $"tokenized from ({Manifest.Configuration.Layout}, {Manifest.Configuration.Split} split) to replay each row's view on its original image");
        if (options.Masks is { } masks && Manifest.CodeLength > 0 && masks.Height * masks.Width != Manifest.CodeLength)
            throw new ArgumentException($"the mask grid {masks.Height}×{masks.Width} does not match the {Manifest.CodeLength} codes per row");
        Images = (int)(Manifest.Rows / Manifest.Configuration.Views);
        // Cheap checks up front (a stat per shard); each shard's SHA-256 and row count are checked when it is first read.
        foreach (var shard in Manifest.Shards)
        {
            var file = new FileInfo(Path.Combine(shardDirectory, shard.Name));
            if (!file.Exists) throw new FileNotFoundException($"{file.FullName}: listed in the manifest but missing", file.FullName);
            if (file.Length != shard.Bytes)
                throw new InvalidDataException($"{file.FullName}: {file.Length:N0} bytes, the manifest says {shard.Bytes:N0} (truncated or replaced; mimflow shards verify tells more)");
        }
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> verifiedShards = new(StringComparer.Ordinal);

    /// <summary>The shard's bytes against the manifest's SHA-256, once per feeder, before any row of it is trained on.</summary>
    private async Task VerifyShardAsync(ShardEntry shard, CancellationToken cancellationToken)
    {
        if (verifiedShards.ContainsKey(shard.Name)) return;
        string path = Path.Combine(directory, shard.Name);
        // A transient error hashes the file again from its start.
        string sha = await io.RunAsync(path, "hashing the shard", async (_, token) =>
        {
            await using var stream = io.Files.OpenRead(path);
            return Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(stream, token));
        }, cancellationToken);
        if (sha != shard.Sha256)
            throw new InvalidDataException($"{path}: SHA-256 {sha} differs from the manifest's {shard.Sha256}: the shard is corrupted; nothing of it was trained on");
        verifiedShards[shard.Name] = true;
    }

    public ShardManifest Manifest { get; }

    /// <summary>Images in the set (each epoch reads each once, in one of its views).</summary>
    public int Images { get; }

    /// <summary>Full batches per epoch (the last partial batch is dropped, as training loaders do).</summary>
    public long BatchesPerEpoch => Images / options.BatchSize;

    private int Cells => Manifest.CodeLength > 0 ? Manifest.CodeLength : options.Masks is { } m ? m.Height * m.Width : 0;

    /// <summary>
    /// Epoch after epoch from <paramref name="firstEpoch"/> (skipping its first <paramref name="skipBatches"/>), with
    /// the next epoch's shards already being read and decoded while the last batches of the current one train, so an
    /// epoch boundary costs the model no wait. Endless: the consumer stops when its steps are done.
    /// </summary>
    public async IAsyncEnumerable<TrainingBatch> ReadEpochsAsync(int firstEpoch, long skipBatches = 0, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await VerifyOriginalsAsync(cancellationToken);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = System.Threading.Channels.Channel.CreateBounded<TrainingBatch>(
            new System.Threading.Channels.BoundedChannelOptions(options.PrefetchBatches) { SingleReader = true, SingleWriter = true });
        var producer = Task.Run(async () =>
        {
            try
            {
                for (int epoch = firstEpoch; ; epoch++)
                {
                    long produced = 0;
                    await foreach (var batch in ReadEpochAsync(epoch, epoch == firstEpoch ? skipBatches : 0, linked.Token))
                    {
                        produced++;
                        await channel.Writer.WriteAsync(batch, linked.Token);
                    }
                    // An epoch that gives nothing would give nothing forever: end rather than spin.
                    if (produced == 0 && (epoch != firstEpoch || skipBatches == 0))
                        throw new InvalidDataException($"{directory}: epoch {epoch} gave no batch of {options.BatchSize} from {Images:N0} listed images");
                }
            }
            catch (Exception error)
            {
                channel.Writer.TryComplete(error);
            }
        }, linked.Token);
        try
        {
            await foreach (var batch in channel.Reader.ReadAllAsync(cancellationToken)) yield return batch;
        }
        finally
        {
            linked.Cancel();
            try { await producer; } catch (OperationCanceledException) { }
        }
    }

    public async IAsyncEnumerable<TrainingBatch> ReadEpochAsync(int epoch, long skipBatches = 0, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        LibvipsSettings.ForGraphParallelism();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var token = linked.Token;
        var rows = options.Rows;
        // Each worker writes its image straight into its row of the batch; the batches being filled are few (the decode
        // block holds at most 2·workers + one batch of images), and one is complete when its last row comes out of the
        // ordered block, since every row before it has then been written.
        var filling = new OpenBatches(this, epoch);
        var decode = new TransformBlock<(long Position, CheckedRow Row), (long Number, int Slot)>(
            async item =>
            {
                long number = item.Position / options.BatchSize;
                int slot = (int)(item.Position % options.BatchSize) - rows.Offset;
                await DecodeAsync(item.Row.Row, item.Row.View, epoch, filling, number, slot, token);
                return (number, slot);
            },
            new ExecutionDataflowBlockOptions
            {
                MaxDegreeOfParallelism = options.DecodeWorkers, BoundedCapacity = 2 * options.DecodeWorkers + options.BatchSize,
                EnsureOrdered = true, CancellationToken = token, SingleProducerConstrained = true,
            });
        var ready = new BufferBlock<TrainingBatch>(new DataflowBlockOptions { BoundedCapacity = options.PrefetchBatches, CancellationToken = token });
        var collate = new ActionBlock<(long Number, int Slot)>(async done =>
        {
            if (done.Slot == rows.Count - 1) await ready.SendAsync(filling.Complete(done.Number), token);
        }, new ExecutionDataflowBlockOptions { BoundedCapacity = options.BatchSize, CancellationToken = token });
        var link = new DataflowLinkOptions { PropagateCompletion = true };
        decode.LinkTo(collate, link);
        _ = collate.Completion.ContinueWith(done =>
        {
            if (done.Exception is { } error) ((IDataflowBlock)ready).Fault(error.GetBaseException());
            else ready.Complete();
        }, TaskScheduler.Default);

        var feed = Task.Run(async () =>
        {
            try
            {
                long skip = skipBatches * options.BatchSize, position = 0, limit = BatchesPerEpoch * options.BatchSize;
                await foreach (var row in ShuffledRowsAsync(epoch, token))
                {
                    if (position >= limit) break;
                    if (position++ < skip) continue;
                    // Every rank streams the same shuffled rows (the shuffle is a function of the stream) and decodes only its own.
                    if (!rows.IsWhole && !rows.Contains((position - 1) % options.BatchSize)) continue;
                    if (!await decode.SendAsync((position - 1, row), token)) break;
                }
                decode.Complete();
            }
            catch (Exception error)
            {
                ((IDataflowBlock)decode).Fault(error);
                throw;
            }
        }, token);

        try
        {
            await foreach (var batch in ready.ReadAllAsync(token)) yield return batch;
            await feed;
        }
        finally
        {
            linked.Cancel();
        }
    }

    private bool originalsVerified;

    /// <summary>
    /// Before the first batch: every image the shards name is in the originals' listing, so a moved or different
    /// dataset ends the run at once, naming the first missing image, rather than hours into training. Reads only the
    /// shards' <c>path</c> column.
    /// </summary>
    public async Task VerifyOriginalsAsync(CancellationToken cancellationToken = default)
    {
        if (options.Originals is not { } originals || originalsVerified) return;
        long checkedImages = 0;
        foreach (var shard in Manifest.Shards)
        {
            string previous = "";
            await foreach (string path in ShardReader.ReadPathsAsync(Path.Combine(directory, shard.Name), io, cancellationToken))
            {
                if (path == previous) continue;
                previous = path;
                if (!originals.TryFind(path, out _))
                    throw new FileNotFoundException($"{originals.Root}: '{path}' (shard {shard.Name}) is not in this {originals.Layout} dataset: " +
                                                    $"give --data the dataset the shards were tokenized from ({checkedImages:N0} images before it were found)");
                checkedImages++;
            }
        }
        originalsVerified = true;
    }

    /// <summary>One row per image (its view for this epoch), shards in a seeded order, images through a seeded shuffle buffer.</summary>
    private async IAsyncEnumerable<CheckedRow> ShuffledRowsAsync(int epoch, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var shards = Manifest.Shards.ToArray();
        StableRandom.For(options.Seed, "feeder-shards", (ulong)epoch).Shuffle(shards);
        var shuffle = StableRandom.For(options.Seed, "feeder-shuffle", (ulong)epoch);
        var buffer = new List<CheckedRow>(options.ShuffleBuffer);
        int views = Manifest.Configuration.Views;
        foreach (var shard in shards)
        {
            await VerifyShardAsync(shard, cancellationToken);
            string path = Path.Combine(directory, shard.Name);
            long rows = 0;
            await using var reader = ShardReader.ReadAsync(path, io, cancellationToken).GetAsyncEnumerator(cancellationToken);
            while (true)
            {
                ShardRow row;
                try
                {
                    if (!await reader.MoveNextAsync()) break;
                    row = reader.Current;
                }
                catch (Exception e) when (e is not (OperationCanceledException or InvalidDataException or IOException))
                {
                    throw new InvalidDataException($"{path}: unreadable after row {rows} ({e.GetType().Name}: {e.Message})", e);
                }
                rows++;
                var view = CheckRow(path, rows - 1, row);
                if (row.View != ChosenView(row.SampleId, epoch, views)) continue;
                if (buffer.Count < options.ShuffleBuffer)
                {
                    buffer.Add(new CheckedRow(row, view));
                    continue;
                }
                int slot = shuffle.NextInt(options.ShuffleBuffer);
                yield return buffer[slot];
                buffer[slot] = new CheckedRow(row, view);
            }
            if (rows != shard.Rows) throw new InvalidDataException($"{path}: {rows:N0} rows, the manifest says {shard.Rows:N0}");
        }
        shuffle.Shuffle(buffer);
        foreach (var row in buffer) yield return row;
    }

    /// <summary>A row and its view's parameters, parsed once when the row was checked.</summary>
    private readonly record struct CheckedRow(ShardRow Row, ViewParams View);

    /// <summary>What training reads of a row, checked as it is read: a view the set has, codes of the grid inside the codebook, features of the manifest's size.</summary>
    private ViewParams CheckRow(string path, long index, ShardRow row)
    {
        string Where() => $"{path}: row {index} ({row.Path}, view {row.View})";
        if (row.View < 0 || row.View >= Manifest.Configuration.Views) throw new InvalidDataException($"{Where()}: view outside 0..{Manifest.Configuration.Views - 1}");
        if (row.SampleId is not { Length: 16 } || !ulong.TryParse(row.SampleId, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out _))
            throw new InvalidDataException($"{Where()}: sample_id '{row.SampleId}' is not 16 hex digits");
        if (Manifest.Columns.Codes)
        {
            var codes = row.Codes ?? throw new InvalidDataException($"{Where()}: no codes");
            if (codes.Length != Manifest.CodeLength) throw new InvalidDataException($"{Where()}: {codes.Length} codes, the grid has {Manifest.CodeLength}");
            foreach (short code in codes)
                if (code < 0 || code >= Manifest.CodebookSize) throw new InvalidDataException($"{Where()}: code {code} outside the codebook 0..{Manifest.CodebookSize - 1}");
        }
        if (Manifest.FeatureShape is [int tokens, int dim])
        {
            long expected = (long)tokens * dim * (Manifest.Columns.Features == FeatureEncoding.Fp16 ? 2 : 1);
            if (row.Features?.Length != expected) throw new InvalidDataException($"{Where()}: {row.Features?.Length ?? 0} feature bytes, [{tokens}, {dim}] needs {expected}");
            if (Manifest.Columns.Features == FeatureEncoding.Int8 && row.FeatureScales?.Length != tokens * 2)
                throw new InvalidDataException($"{Where()}: {row.FeatureScales?.Length ?? 0} scale bytes, {tokens} tokens need {tokens * 2}");
        }
        if (Manifest.Columns.Image && options.Originals is null && row.Image is not { Length: > 0 }) throw new InvalidDataException($"{Where()}: no stored image");
        if (row.SourceWidth < 1 || row.SourceHeight < 1) throw new InvalidDataException($"{Where()}: source size {row.SourceWidth}×{row.SourceHeight}");
        // The replayed view: parsed and bounded here, where the shard is known, not deep in the decoder.
        ViewParams view;
        try
        {
            view = AugmentParams.FromJson(row.Augment ?? "").Views?.FirstOrDefault() ?? throw new InvalidDataException("no view");
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or NotSupportedException)
        {
            throw new InvalidDataException($"{Where()}: unreadable augmentation parameters ({e.Message})", e);
        }
        var crop = view.Crop;
        if (crop is null || view.Ops is null || !(double.IsFinite(crop.X) && double.IsFinite(crop.Y) && crop.Width > 0 && crop.Height > 0 && double.IsFinite(crop.Right) && double.IsFinite(crop.Bottom)))
            throw new InvalidDataException($"{Where()}: augmentation parameters without a finite crop of positive size");
        if (view.Width != view.Height || view.Width < 1 || view.Width > MaxViewSide || (viewSide is int side && side != view.Width))
            throw new InvalidDataException($"{Where()}: a view of {view.Width}×{view.Height}, the set's views are {(viewSide is int s ? $"{s}×{s}" : $"square, at most {MaxViewSide}")}");
        viewSide = view.Width;
        return view;
    }

    /// <summary>Largest view side a row may ask for (a damaged number must not size an allocation).</summary>
    private const int MaxViewSide = 4096;

    /// <summary>The side of the views of the rows checked so far: every row of a set has the same.</summary>
    private int? viewSide;

    private int ChosenView(string sampleId, int epoch, int views) =>
        views == 1 ? 0 : StableRandom.For(options.Seed, "feeder-view", (ulong)epoch, SampleKey(sampleId)).NextInt(views);

    private static ulong SampleKey(string sampleId) => ulong.Parse(sampleId, NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    /// <summary>The batches of one epoch being filled by the decode workers, by number.</summary>
    private sealed class OpenBatches(ShardFeeder feeder, int epoch)
    {
        private readonly Dictionary<long, TrainingBatch> open = [];

        public TrainingBatch Get(long number, int side)
        {
            lock (open)
            {
                if (!open.TryGetValue(number, out var batch)) open[number] = batch = feeder.NewBatch(side, epoch, number);
                return batch;
            }
        }

        public TrainingBatch Complete(long number)
        {
            lock (open)
            {
                open.Remove(number, out var batch);
                return batch ?? throw new InvalidOperationException($"batch {number} of epoch {epoch} completed without its rows");
            }
        }
    }

    private async Task DecodeAsync(ShardRow row, ViewParams view, int epoch, OpenBatches filling, long number, int slot, CancellationToken cancellationToken)
    {
        try
        {
            byte[] encoded = options.Originals is { } originals ? await OriginalAsync(originals, row, cancellationToken) : row.Image!;
            Render(row, view, encoded, epoch, filling, number, slot);
        }
        catch (BadImageException e)
        {
            throw new InvalidDataException($"{row.Path} (view {row.View}, sample {row.SampleId}): the {(options.Originals is null ? "stored" : "original")} image cannot be used: {e.Reason}", e);
        }
    }

    /// <summary>Replays the row's view on its image and writes it, its mask and its targets into row <paramref name="slot"/> of batch <paramref name="number"/>.</summary>
    private void Render(ShardRow row, ViewParams view, byte[] encoded, int epoch, OpenBatches filling, long number, int slot)
    {
        var header = ImageHeader.Read(encoded, DecodeLimits.Default);
        if (options.Originals is not null && (header.Width != row.SourceWidth || header.Height != row.SourceHeight))
            throw new InvalidDataException($"{options.Originals.Root}: '{row.Path}' is {header.Width}×{header.Height}, but it was tokenized at " +
                                           $"{row.SourceWidth}×{row.SourceHeight}: not the image the shards were made from");
        // A stored image is the source shrunk: the same crop in its pixels.
        double scaleX = (double)header.Width / row.SourceWidth, scaleY = (double)header.Height / row.SourceHeight;
        var crop = view.Crop;
        var replay = AugmentParams.Of(view with { Crop = new CropBox(crop.X * scaleX, crop.Y * scaleY, crop.Width * scaleX, crop.Height * scaleY) });
        var shape = new ViewShape(view.Width, view.Height);
        var batch = filling.Get(number, view.Width);
        // Pooled: the planar view lives for this call; the floats go straight into the batch.
        byte[] planar = System.Buffers.ArrayPool<byte>.Shared.Rent(shape.Bytes);
        try
        {
            Augmenter.Render(encoded, header, replay, [shape], [planar.AsMemory(0, shape.Bytes)]);
            PixelNormalizer.ToFloat(planar.AsSpan(0, shape.Bytes), batch.Pixels.AsSpan(slot * shape.Bytes, shape.Bytes), imageNetStatistics: true);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(planar);
        }
        // Every value of the row is written: a reused batch holds the values of an earlier one.
        int cells = batch.Cells, featureValues = batch.FeatureValues;
        var masks = batch.Masks.AsSpan(slot * cells, cells);
        if (options.Masks is { } generator)
        {
            var random = StableRandom.For(options.Seed, "feeder-mask", (ulong)epoch, SampleKey(row.SampleId));
            generator.Next(ref random).CopyTo(masks);
        }
        else masks.Clear();
        var codeRow = batch.Codes.AsSpan(slot * cells, cells);
        codeRow.Clear();
        if (row.Codes is { } codes)
            for (int c = 0; c < codes.Length; c++) codeRow[c] = codes[c];
        var featureRow = batch.Features.AsSpan(slot * featureValues, featureValues);
        if (row.Features is { } features) FeatureCodec.Decode(features, row.FeatureScales, featureRow);
        else featureRow.Clear();
        batch.Labels[slot] = row.Label ?? -1;
        batch.SampleIds[slot] = row.SampleId;
    }

    private static async Task<byte[]> OriginalAsync(SampleIndex originals, ShardRow row, CancellationToken cancellationToken)
    {
        if (!originals.TryFind(row.Path, out var sample))
            throw new FileNotFoundException($"{originals.Root}: '{row.Path}' is not in the dataset the shards are replayed on");
        return await originals.ReadImageAsync(sample, cancellationToken);
    }

    /// <summary>Batches their consumers have disposed, for <see cref="NewBatch"/> to fill again (at most <see cref="SpareLimit"/>).</summary>
    private readonly System.Collections.Concurrent.ConcurrentBag<TrainingBatch> spareBatches = [];

    private const int SpareLimit = 8;

    private void Recycle(TrainingBatch batch)
    {
        if (spareBatches.Count < SpareLimit) spareBatches.Add(batch);
    }

    /// <summary>A batch of this process's rows, a spare one when there is one.</summary>
    private TrainingBatch NewBatch(int side, int epoch, long number)
    {
        int count = options.Rows.Count, cells = Cells, tokens = Manifest.FeatureShape?[0] ?? 0, dim = Manifest.FeatureShape?[1] ?? 0;
        if (!spareBatches.TryTake(out var batch) || !batch.Fits(count, side, cells, tokens, dim))
            batch = new TrainingBatch(count, side, cells, tokens, dim);
        return batch.Issue(epoch, number, Recycle);
    }
}
