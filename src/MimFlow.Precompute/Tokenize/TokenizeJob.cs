using System.Diagnostics;
using System.Threading.Channels;
using MimFlow.Core.IO;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Sources;
using MimFlow.Models.Teachers;
using MimFlow.Shards;
using static TorchSharp.torch;

namespace MimFlow.Precompute.Tokenize;

/// <summary>What <c>mimflow tokenize</c> runs.</summary>
public sealed record TokenizeRequest
{
    public required string DataRoot { get; init; }
    public DatasetLayout Layout { get; init; } = DatasetLayout.ImageNet;
    public DatasetSplit Split { get; init; } = DatasetSplit.Train;
    public string? GroundTruth { get; init; }
    public string? TokenizerDirectory { get; init; }
    public string? TeacherDirectory { get; init; }
    public TeacherOptions Teacher { get; init; } = new();
    public FeatureEncoding FeatureEncoding { get; init; } = FeatureEncoding.Fp16;
    public int Views { get; init; } = 1;
    public ulong Seed { get; init; }
    public required string OutputDirectory { get; init; }
    public int ShardIndex { get; init; }
    public int ShardCount { get; init; } = 1;
    public int? StoreImageMaxSide { get; init; }
    public int StoreImageQuality { get; init; } = 90;
    public int BatchSize { get; init; } = 64;
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;
    /// <summary>A shard is finished at the first image boundary at or past this size.</summary>
    public long TargetShardBytes { get; init; } = 256L << 20;
    public int RowGroupRows { get; init; } = 256;
    public int? ImageSize { get; init; }
    public Device? Device { get; init; }

    /// <summary>Only the first this many samples of the part (trial runs, benchmarks); null for all.</summary>
    public int? Limit { get; init; }

    /// <summary>How shard files are written and transient I/O errors retried (a shard is written again whole);
    /// null: the defaults of <see cref="TransientIo"/>.</summary>
    public TransientIo? Io { get; init; }

    public void Validate()
    {
        if (Views < 1) throw new ArgumentException($"--views must be at least 1 (got {Views})");
        if (ShardCount < 1 || ShardIndex < 0 || ShardIndex >= ShardCount) throw new ArgumentException($"--shard {ShardIndex}/{ShardCount}: the index must be in 0..{ShardCount - 1}");
        if (TargetShardBytes < 1) throw new ArgumentException("the shard size target must be positive");
        if (RowGroupRows < 1) throw new ArgumentException("row groups need at least 1 row");
        if (StoreImageMaxSide is < 16) throw new ArgumentException("--store-image max-side must be at least 16");
        if (StoreImageQuality is < 1 or > 100) throw new ArgumentException("--store-image quality must be in 1..100");
    }
}

/// <summary>Reported after each batch (from the model's side) and after each finished shard (from the writer's).</summary>
/// <param name="Shards">Shards finished and journaled.</param>
public sealed record TokenizeProgress(int SamplesDone, int SamplesTotal, long Rows, int Shards, int Quarantined);

public sealed record TokenizeResult(
    ShardManifest Manifest, int ResumedFromSample, int SamplesProcessed, double Seconds, double ImagesPerSecond, double InputWaitShare, bool AlreadyComplete);

/// <summary>
/// Pre-tokenization of one part of a dataset: the data graph renders K pretraining draws per image (uint8 views) →
/// the frozen tokenizer / teacher turn each draw into codes / features → a writer task turns rows into Parquet
/// shards of about the target size (cut only between images), recording each finished shard in
/// <c>progress.json</c>; the dataset card (<c>README.md</c>) and then <c>manifest.json</c> are written last. A run
/// interrupted at any point and started again with the same request continues after the last finished shard:
/// unfinished files are removed, so the set ends with exactly the rows of an uninterrupted run.
/// </summary>
public static class TokenizeJob
{
    public const string ProgressFileName = "progress.json";

    public static Task<TokenizeResult> RunAsync(TokenizeRequest request, IProgress<TokenizeProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate();
        return RunAsync(request, DatasetSource.Open(request.DataRoot, request.Layout, request.Split, request.GroundTruth), progress, cancellationToken);
    }

    /// <summary>The run over an index already opened from <paramref name="request"/>'s data (the benchmark's passes share one scan).</summary>
    internal static async Task<TokenizeResult> RunAsync(TokenizeRequest request, SampleIndex index, IProgress<TokenizeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        request.Validate();
        Directory.CreateDirectory(request.OutputDirectory);
        using var writer = OutputLock.Acquire(request.OutputDirectory, "tokenize");
        var (first, end) = PartRange(index.Count, request.ShardIndex, request.ShardCount, request.Limit);
        using var models = new FrozenModels(request.TokenizerDirectory, request.TeacherDirectory, request.Teacher, request.Device ?? CPU, request.ImageSize);
        var draw = new PretrainRecipe(models.ImageSize, models.SecondViewSize);
        var recipe = new RepeatedDraws(draw, request.Views);
        var configuration = new TokenizeConfiguration
        {
            Layout = DatasetLayouts.Name(request.Layout), Split = request.Split.ToString().ToLowerInvariant(), DatasetSamples = index.Count,
            Views = request.Views, Seed = request.Seed, Recipe = draw.Name, Tokenizer = models.TokenizerIdentity, Teacher = models.TeacherIdentity,
            TeacherLastLayers = request.Teacher.LastLayers, TeacherProjection = request.Teacher.Project,
            Features = request.TeacherDirectory is null ? null : request.FeatureEncoding,
            StoreImageMaxSide = request.StoreImageMaxSide, StoreImageQuality = request.StoreImageQuality,
            ShardIndex = request.ShardIndex, ShardCount = request.ShardCount, TargetShardBytes = request.TargetShardBytes,
            RowGroupRows = request.RowGroupRows, Arithmetic = models.Arithmetic, Limit = request.Limit,
        };
        var columns = new ShardColumns(models.TokenizerSpec is not null, configuration.Features, request.StoreImageMaxSide is not null,
            request.StoreImageMaxSide is not null && index.HasAnnotations);

        if (File.Exists(Path.Combine(request.OutputDirectory, ShardManifest.FileName)))
        {
            var finished = ShardManifest.Read(request.OutputDirectory);
            if (finished.Configuration != configuration)
                throw new InvalidOperationException($"{request.OutputDirectory}: holds a finished shard set made with another configuration; write to a new folder");
            return new TokenizeResult(finished, end, 0, 0, 0, 0, AlreadyComplete: true);
        }

        // The card is written at the end, over whatever README.md is there: refuse a foreign one now, not after hours.
        DatasetCard.EnsureWritable(request.OutputDirectory);
        var classes = ShardClasses.Of(index.Classes, index.HasAnnotations);
        var description = new ShardDescription(configuration, columns, classes, models.CodeLength, models.CodebookSize,
            columns.Features is null ? null : models.FeatureShape);
        var journal = TokenizeJournal.Open(request.OutputDirectory, configuration);
        int resumeAt = journal.Shards.Count > 0 ? journal.Shards[^1].FirstSample + journal.Shards[^1].Samples : first;
        var quarantine = new QuarantineLog(null);
        int processed = 0;
        var sink = new ShardSink(request, new ShardSchema(columns, description), journal, resumeAt,
            () => progress?.Report(new TokenizeProgress(Volatile.Read(ref processed), end - resumeAt, journal.Shards.Sum(s => s.Rows), journal.Shards.Count, quarantine.Count)));
        var loader = new DataflowLoader(index, recipe, new LoaderOptions
        {
            BatchSize = request.BatchSize, Seed = request.Seed, Epoch = 0, Format = PixelFormat.UInt8, DecodeWorkers = request.DecodeWorkers,
            Samples = Enumerable.Range(resumeAt, end - resumeAt).ToArray(), Shuffle = false,
        }, quarantine);

        var channel = Channel.CreateBounded<IReadOnlyList<SampleRows>>(new BoundedChannelOptions(2) { SingleReader = true, SingleWriter = true });
        var writing = Task.Run(async () =>
        {
            try
            {
                await foreach (var batchRows in channel.Reader.ReadAllAsync(cancellationToken))
                    foreach (var sample in await SampleRows.WithSourcesAsync(batchRows, index, request, cancellationToken))
                        await sink.AddAsync(sample, quarantine, cancellationToken);
                await sink.FinishAsync(end, quarantine, cancellationToken);
            }
            catch (Exception error)
            {
                // Nobody reads the channel any more: close it, so the models' side stops at its next batch instead of
                // waiting for room forever.
                channel.Writer.TryComplete(error);
                throw;
            }
        }, cancellationToken);

        var clock = Stopwatch.StartNew();
        var waiting = new Stopwatch();
        try
        {
            waiting.Start();
            await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
            {
                waiting.Stop();
                using (batch)
                {
                    var rows = RowsOf(batch, request, models, recipe, draw);
                    Volatile.Write(ref processed, batch.Samples[batch.Count - 1].Index + 1 - resumeAt);
                    await channel.Writer.WriteAsync(rows, cancellationToken);
                    progress?.Report(new TokenizeProgress(processed, end - resumeAt, sink.Rows, sink.ShardCount, quarantine.Count));
                }
                waiting.Start();
            }
            waiting.Stop();
            channel.Writer.Complete();
        }
        catch (Exception error)
        {
            channel.Writer.TryComplete(error);
            try { await writing; } catch (Exception) when (error is not null) { }
            await sink.AbandonAsync();
            // When the writer failed, its error is the cause (the models' side only saw the channel close).
            if (writing.IsFaulted && error is ChannelClosedException) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(writing.Exception!.GetBaseException());
            throw;
        }
        try
        {
            await writing;
        }
        catch
        {
            await sink.AbandonAsync();
            throw;
        }
        clock.Stop();

        var manifest = new ShardManifest
        {
            Configuration = configuration, Columns = columns, CodeLength = models.CodeLength, CodebookSize = models.CodebookSize,
            FeatureShape = columns.Features is null ? null : models.FeatureShape, FirstSample = first, SampleCount = end - first,
            Rows = journal.Shards.Sum(s => s.Rows), Quarantined = journal.Quarantine.Count, Shards = journal.Shards.ToList(), Classes = classes,
        };
        // The card first: the manifest is the commit point, so a complete set always has its card.
        DatasetCard.Write(request.OutputDirectory, manifest);
        manifest.Write(request.OutputDirectory);
        journal.Delete();
        progress?.Report(new TokenizeProgress(end - resumeAt, end - resumeAt, manifest.Rows, manifest.Shards.Count, manifest.Quarantined));
        double seconds = clock.Elapsed.TotalSeconds;
        int images = end - resumeAt - (journal.Quarantine.Count(q => q.SampleIndex >= resumeAt));
        return new TokenizeResult(manifest, resumeAt, end - resumeAt, seconds, images / Math.Max(seconds, 1e-9),
            waiting.Elapsed.TotalSeconds / Math.Max(seconds, 1e-9), AlreadyComplete: false);
    }

    /// <summary>The samples [first, end) part <paramref name="index"/> of <paramref name="count"/> covers.</summary>
    internal static (int First, int End) PartRange(int samples, int index, int count, int? limit)
    {
        int first = (int)((long)samples * index / count);
        int end = (int)((long)samples * (index + 1) / count);
        if (limit is int most) end = (int)Math.Min(end, (long)first + most);
        return (first, end);
    }

    internal static (int First, int End) PartRange(TokenizeConfiguration configuration) =>
        PartRange(configuration.DatasetSamples, configuration.ShardIndex, configuration.ShardCount, configuration.Limit);

    /// <summary>sample_id: 16 hex digits of SHA-256 over the '/'-separated path relative to the dataset root
    /// (<see cref="SampleIndex.SampleId"/>; for wds and hf-parquet the path names the shard and the key or row).</summary>
    public static string SampleId(string relativePath) => SampleIndex.SampleId(relativePath);

    private static List<SampleRows> RowsOf(Batch batch, TokenizeRequest request, FrozenModels models, RepeatedDraws recipe, PretrainRecipe draw)
    {
        int count = batch.Count, perDraw = draw.Views.Count;
        var codes = new short[request.Views][][];
        var features = new (byte[] Features, byte[]? Scales)[request.Views][];
        for (int k = 0; k < request.Views; k++)
        {
            if (models.TokenizerSpec is not null)
            {
                int view = k * perDraw + models.TokenizerView;
                codes[k] = models.Codes(batch.ViewBytes(view), count, batch.Views[view].Width);
            }
            if (models.TeacherSpec is not null)
                features[k] = models.Features(batch.ViewBytes(k * perDraw), count, batch.Views[k * perDraw].Width, request.FeatureEncoding);
        }
        var samples = new List<SampleRows>(count);
        for (int r = 0; r < count; r++)
        {
            var sample = batch.Samples[r];
            string id = SampleId(sample.RelativePath);
            var rows = new ShardRow[request.Views];
            for (int k = 0; k < request.Views; k++)
                rows[k] = new ShardRow(id, sample.RelativePath, sample.Label >= 0 ? sample.Label : null, k, recipe.Slice(batch.Params[r], k).ToJson(),
                    0, 0, models.TokenizerSpec is null ? null : codes[k][r],
                    models.TeacherSpec is null ? null : features[k][r].Features, models.TeacherSpec is null ? null : features[k][r].Scales, null, null);
            samples.Add(new SampleRows(sample.Index, rows, sample));
        }
        return samples;
    }
}

/// <summary>The rows (one per view) of one dataset sample.</summary>
public sealed record SampleRows(int SampleIndex, IReadOnlyList<ShardRow> Rows, Sample? Source = null)
{
    /// <summary>
    /// The rows with the source's size and, when stored, its re-encoded image and label map. Done on the writer's side
    /// (in parallel over a batch), so re-encoding overlaps the models' next batch instead of delaying it.
    /// </summary>
    public static async Task<IReadOnlyList<SampleRows>> WithSourcesAsync(IReadOnlyList<SampleRows> samples, SampleIndex index, TokenizeRequest request,
        CancellationToken cancellationToken)
    {
        var completed = new SampleRows[samples.Count];
        await Parallel.ForAsync(0, samples.Count, new ParallelOptions { MaxDegreeOfParallelism = request.DecodeWorkers, CancellationToken = cancellationToken }, async (i, token) =>
        {
            var sample = samples[i].Source ?? throw new InvalidOperationException("rows without their sample");
            byte[] bytes = await index.ReadImageAsync(sample, token);
            byte[]? annotation = request.StoreImageMaxSide is not null ? await index.ReadAnnotationAsync(sample, token) : null;
            var stored = SourceStore.Store(bytes, annotation, request.StoreImageMaxSide, request.StoreImageQuality, DecodeLimits.Default);
            completed[i] = samples[i] with
            {
                Rows = samples[i].Rows.Select(r => r with { SourceWidth = stored.Width, SourceHeight = stored.Height, Image = stored.Image, LabelMap = stored.LabelMap }).ToList(),
            };
        });
        return completed;
    }

    public long PayloadBytes => Rows.Sum(r => (long)(r.Codes?.Length ?? 0) * 2 + (r.Features?.Length ?? 0) + (r.FeatureScales?.Length ?? 0)
                                             + (r.Image?.Length ?? 0) + (r.LabelMap?.Length ?? 0) + r.Augment.Length + r.Path.Length + 32);
}
