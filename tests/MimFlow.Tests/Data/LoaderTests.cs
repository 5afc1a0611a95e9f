using System.Text.Json;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Data;

public sealed class LoaderTests
{
    private static Task<SampleIndex> Dataset(TemporaryDirectory dir, int images = 24) => TestImages.TrainingSet(dir.Path, images, 3, 64, 160);

    private static LoaderOptions Small => new()
    {
        BatchSize = 5, Seed = 3, DecodeWorkers = 2, ReadConcurrency = 2, PrefetchBatches = 1, Format = PixelFormat.UInt8,
        Masks = new BlockwiseMaskGenerator(4, 4, 6, MinBlockPatches: 2),
    };

    private static async Task<List<(byte[] Pixels, int[] Labels, byte[] Masks, string[] Paths)>> Epoch(DataflowLoader loader)
    {
        var batches = new List<(byte[], int[], byte[], string[])>();
        await foreach (var batch in loader.ReadEpochAsync())
            using (batch)
                batches.Add((batch.ViewBytes(0).ToArray(), batch.Labels[..batch.Count], batch.Masks[..(batch.Count * batch.MaskCells)],
                    batch.Samples[..batch.Count].Select(s => s.RelativePath).ToArray()));
        return batches;
    }

    [Fact]
    public async Task Batch_buffers_come_back_to_the_loader_from_whichever_thread_disposes_them()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir, images: 40);
        var options = Small with { BatchSize = 4, Format = PixelFormat.Float32, Masks = null };
        var loader = new DataflowLoader(index, new PretrainRecipe(Size: 32, SecondViewSize: null), options);
        var buffers = new HashSet<float[]>(ReferenceEqualityComparer.Instance);
        int batches = 0;
        await foreach (var batch in loader.ReadEpochAsync())
        {
            buffers.Add(batch.Floats[0]);
            batches++;
            // A consumer may hand batches back from any thread (the device prefetcher does). ArrayPool.Shared keeps a
            // returned array in the returning thread's own slot, out of the collating thread's reach: the loader
            // then allocated (and page-faulted) a fresh buffer for most batches.
            var disposer = new Thread(() => batch.Dispose());
            disposer.Start();
            disposer.Join();
        }
        Assert.Equal(10, batches);
        Assert.InRange(buffers.Count, 1, options.PrefetchBatches + 2);
    }

    [Fact]
    public async Task Batches_are_identical_across_runs_and_change_with_the_epoch()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir);
        var recipe = new PretrainRecipe(Size: 32, SecondViewSize: 16);
        var first = await Epoch(new DataflowLoader(index, recipe, Small));
        var again = await Epoch(new DataflowLoader(index, recipe, Small with { DecodeWorkers = 1 }));
        var next = await Epoch(new DataflowLoader(index, recipe, Small with { Epoch = 1 }));

        Assert.Equal([5, 5, 5, 5, 4], first.Select(b => b.Labels.Length));
        Assert.Equal(first.Select(b => b.Pixels), again.Select(b => b.Pixels));
        Assert.Equal(first.Select(b => b.Masks), again.Select(b => b.Masks));
        Assert.Equal(first.SelectMany(b => b.Paths).Order(), index.All().Select(s => s.RelativePath).Order());
        Assert.NotEqual(first.SelectMany(b => b.Paths), next.SelectMany(b => b.Paths));
    }

    [Fact]
    public async Task A_batch_row_replays_from_its_stored_params_and_the_original_bytes()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir, 6);
        var loader = new DataflowLoader(index, new PretrainRecipe(Size: 48, SecondViewSize: 24), Small with { BatchSize = 6 });
        await foreach (var batch in loader.ReadEpochAsync())
        {
            using (batch)
            {
                for (int row = 0; row < batch.Count; row++)
                {
                    byte[] bytes = await index.ReadImageAsync(batch.Samples[row]);
                    var stored = JsonSerializer.Deserialize<AugmentParams>(JsonSerializer.Serialize(batch.Params[row]))!;
                    byte[] first = new byte[batch.Views[0].Bytes], second = new byte[batch.Views[1].Bytes];
                    Augmenter.Render(bytes, ImageHeader.Read(bytes, DecodeLimits.Default), stored, batch.Views, [first, second]);
                    Assert.Equal(batch.ViewBytes(0).Slice(row * first.Length, first.Length).ToArray(), first);
                    Assert.Equal(batch.ViewBytes(1).Slice(row * second.Length, second.Length).ToArray(), second);
                }
            }
        }
    }

    [Fact]
    public async Task Float_batches_are_normalised_with_imagenet_statistics()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir, 5);
        var recipe = new PretrainRecipe(Size: 32, SecondViewSize: 16);
        var bytes = await Epoch(new DataflowLoader(index, recipe, Small));
        await foreach (var batch in new DataflowLoader(index, recipe, Small with { Format = PixelFormat.Float32 }).ReadEpochAsync())
            using (batch)
            {
                var floats = batch.ViewFloats(0);
                var raw = bytes[0].Pixels;
                int plane = 32 * 32;
                float[] mean = [0.485f, 0.456f, 0.406f], std = [0.229f, 0.224f, 0.225f];
                for (int i = 0; i < raw.Length; i += 97)
                {
                    int channel = i / plane % 3;
                    Assert.Equal((raw[i] / 255f - mean[channel]) / std[channel], floats[i], 1e-5);
                }
                Assert.InRange(batch.ViewFloats(1).ToArray().Max(), 0f, 1f);
            }
    }

    [Fact]
    public async Task Memory_stays_bounded_with_a_slow_consumer()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir, 40);
        var options = Small with { BatchSize = 2, DecodeWorkers = 2, ReadConcurrency = 1, PrefetchBatches = 1 };
        var loader = new DataflowLoader(index, new PretrainRecipe(Size: 16, SecondViewSize: null), options);
        int consumed = 0, worst = 0;
        await foreach (var batch in loader.ReadEpochAsync())
        {
            using (batch)
            {
                await Task.Delay(40);
                worst = Math.Max(worst, loader.RenderedCount - consumed);
                consumed += batch.Count;
            }
        }
        Assert.Equal(40, consumed);
        Assert.True(worst <= options.MaxSamplesInFlight, $"{worst} samples rendered ahead of the consumer; bound {options.MaxSamplesInFlight}");
        Assert.True(worst < 40, "the loader must not run through the whole epoch ahead of a slow consumer");
    }

    [Fact]
    public async Task Cancellation_stops_the_graph_promptly()
    {
        using var dir = new TemporaryDirectory();
        var index = await Dataset(dir, 40);
        using var cancel = new CancellationTokenSource();
        var loader = new DataflowLoader(index, new PretrainRecipe(Size: 32, SecondViewSize: null), Small with { BatchSize = 2 });
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var batch in loader.ReadEpochAsync(cancel.Token))
            {
                batch.Dispose();
                cancel.Cancel();
            }
        });
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10));
        Assert.True(loader.RenderedCount < 40);
    }

    [Fact]
    public async Task Scan_quarantines_every_kind_of_bad_input_with_a_reason_and_keeps_the_valid_ones()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(320, 240);
        var files = new Dictionary<string, byte[]>
        {
            ["ok.jpg"] = jpeg,
            ["grey.jpg"] = TestImages.GreyJpeg(120, 90),
            ["cmyk.jpg"] = TestImages.CmykJpeg(120, 90),
            ["deep.png"] = TestImages.Png16(100, 80),
            ["alpha.png"] = TestImages.AlphaPng(100, 80),
            ["rotated.jpg"] = TestImages.OrientedJpeg(120, 80, 6),
            ["tiny.jpg"] = TestImages.Jpeg(20, 15),
            ["empty.jpg"] = [],
            ["truncated.jpg"] = jpeg[..(jpeg.Length / 2)],
            ["text.jpg"] = "not an image at all"u8.ToArray(),
            ["huge.png"] = TestImages.AlphaPng(400, 300),
            ["vanishing.jpg"] = jpeg,
        };
        foreach (var (name, bytes) in files) TestImages.Write(dir.Combine("data", name), bytes);
        var index = DatasetSource.Open(dir.Combine("data"), DatasetLayout.Folder);
        File.Delete(dir.Combine("data", "vanishing.jpg"));

        var report = await DatasetScan.RunAsync(index, dir.Combine("out"), DatasetSplit.Train,
            new LoaderOptions { DecodeWorkers = 2, BatchSize = 4, ReadRetries = 1, Limits = new DecodeLimits(MaxPixels: 100_000) });

        var lines = TestImages.QuarantineReasons(dir.Combine("out"));
        Assert.Equal(12, report.Listed);
        Assert.Equal(7, report.Ok);
        Assert.Equal(5, report.Quarantined);
        Assert.Contains("empty file", lines["empty.jpg"]);
        Assert.Contains("truncated JPEG", lines["truncated.jpg"]);
        Assert.Contains("not a readable image", lines["text.jpg"]);
        Assert.Contains("decompression bomb", lines["huge.png"]);
        Assert.Contains("vanished", lines["vanishing.jpg"]);
        using var scanJson = JsonDocument.Parse(File.ReadAllText(dir.Combine("out", DatasetScan.ReportFileName)));
        Assert.Equal(7, scanJson.RootElement.GetProperty("ok").GetInt32());
        Assert.Equal(5, scanJson.RootElement.GetProperty("quarantined").GetInt32());
        Assert.True(File.Exists(dir.Combine("out", DatasetScan.ClassesFileName)));
    }

    [Fact]
    public async Task Unreadable_paths_are_refused_with_a_reason()
    {
        using var dir = new TemporaryDirectory();
        var reader = new SampleReader(retries: 1, DecodeLimits.Default);
        // Root reads any file whatever its mode, so a path that names a folder stands in for an unreadable file there.
        string path = dir.Combine("folder.jpg");
        Directory.CreateDirectory(path);
        if (Environment.UserName != "root" && !OperatingSystem.IsWindows())
        {
            path = dir.Combine("locked.jpg");
            File.WriteAllBytes(path, [1, 2, 3]);
            File.SetUnixFileMode(path, UnixFileMode.None);
        }
        var error = await Assert.ThrowsAsync<BadImageException>(() => reader.ReadAsync(path, CancellationToken.None));
        Assert.StartsWith("unreadable", error.Reason);
    }

    [Fact]
    public async Task Transient_read_errors_are_retried()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("locked.jpg");
        File.WriteAllBytes(path, TestImages.Jpeg(40, 30));
        var reader = new SampleReader(retries: 6, DecodeLimits.Default, firstDelay: TimeSpan.FromMilliseconds(40));
        var locked = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        var unlock = Task.Run(async () => { await Task.Delay(150); await locked.DisposeAsync(); });
        byte[] bytes = await reader.ReadAsync(path, CancellationToken.None);
        await unlock;
        Assert.True(bytes.Length > 0);
        Assert.True(reader.Retries >= 1, "the first read must have met the lock and been retried");
    }
}
