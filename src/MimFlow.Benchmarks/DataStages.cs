using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using NetVips;

namespace MimFlow.Benchmarks;

/// <summary>One stage of the per-image work: CPU microseconds per image, summed over every thread of the process.</summary>
public sealed record StageCost(string Stage, double MicrosecondsPerImage, string What);

/// <summary>Full decodes of the same files, the limit the augmentation pipeline is held to.</summary>
/// <param name="Ours">The decoder the pipeline uses: the managed JPEG decoder, libvips for what it leaves.</param>
/// <param name="Libvips">libvips alone (jpegload, write to memory).</param>
/// <param name="ManagedShare">Share of the files the managed decoder took.</param>
public sealed record DecodeOnly(int Images, double Ours, double Libvips, double ManagedShare);

/// <summary>
/// Where one image's time goes: every stage of <c>Augmenter.Render</c> and the loader run one after another on the
/// calling thread over the same samples (the loader's own order and parameters), each timed over all images with the
/// process's CPU clock (so libvips' helper threads count), then the loader itself on one worker for the rest
/// (queueing, allocation, GC). JPEG decoding is split as entropy decoding alone (a 1×1 region at the bottom-right
/// corner needs every MCU's Huffman data and one IDCT) and the rest of the region decode (IDCT, upsampling and
/// colour conversion of the blocks the crop touches).
/// </summary>
public static class DataStages
{
    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    /// <summary>CPU seconds used by the whole process so far (CLOCK_PROCESS_CPUTIME_ID).</summary>
    public static double ProcessCpuSeconds()
    {
        if (!OperatingSystem.IsLinux()) return Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;
        _ = ClockGetTime(2, out var time);
        return time.Seconds + time.Nanoseconds * 1e-9;
    }

    private sealed record Prepared(byte[] Bytes, ImageHeader Header, AugmentParams Parameters);

    private static async Task<List<Prepared>> PrepareAsync(SampleIndex data, IAugmentRecipe recipe, int images, CancellationToken cancellationToken)
    {
        var loader = new DataflowLoader(data, recipe, new LoaderOptions { Seed = 1, Limit = images });
        var prepared = new List<Prepared>();
        foreach (int i in loader.EpochOrder())
        {
            byte[] bytes = await data.ReadImageAsync(data[i], cancellationToken);
            ImageHeader header;
            try { header = ImageHeader.Read(bytes, DecodeLimits.Default); }
            catch (BadImageException) { continue; }
            if (recipe is ILabelMapRecipe) continue; // label maps: measured through the loader only
            prepared.Add(new Prepared(bytes, header, loader.DrawParams(header, i)));
        }
        return prepared;
    }

    /// <summary>CPU µs per image: the time over <paramref name="items"/> divided by <paramref name="perImages"/> (all images of the
    /// run when a stage applies to some of them only), after a warm-up pass over the first 20.</summary>
    private static double Time<T>(IReadOnlyList<T> items, Action<T> action, int? perImages = null)
    {
        for (int i = 0; i < Math.Min(20, items.Count); i++) action(items[i]);
        double start = ProcessCpuSeconds();
        foreach (var item in items) action(item);
        return (ProcessCpuSeconds() - start) * 1e6 / Math.Max(1, perImages ?? items.Count);
    }

    private static double WallTime<T>(IReadOnlyList<T> items, Action<T> action)
    {
        for (int i = 0; i < Math.Min(20, items.Count); i++) action(items[i]);
        var watch = Stopwatch.StartNew();
        foreach (var item in items) action(item);
        return watch.Elapsed.TotalSeconds * 1e6 / Math.Max(1, items.Count);
    }

    /// <summary>Full decode of every file: ours (managed where it applies) and libvips alone, images per second (wall).</summary>
    public static async Task<DecodeOnly> DecodeOnlyAsync(SampleIndex data, int images, CancellationToken cancellationToken)
    {
        LibvipsSettings.ForGraphParallelism();
        var files = new List<(byte[] Bytes, ImageHeader Header)>();
        for (int i = 0; i < Math.Min(images, data.Count); i++)
        {
            byte[] bytes = await data.ReadImageAsync(data[i], cancellationToken);
            try { files.Add((bytes, ImageHeader.Read(bytes, DecodeLimits.Default))); }
            catch (BadImageException) { }
        }
        byte[] buffer = new byte[files.Count == 0 ? 0 : files.Max(f => 3 * f.Header.Width * f.Header.Height)];
        bool Managed((byte[] Bytes, ImageHeader Header) f) =>
            f.Header.IsJpeg && f.Header.Orientation == 1 && JpegRegionDecoder.ForThread.TryDecode(f.Bytes, 0, 0, f.Header.Width, f.Header.Height, buffer);
        int managed = files.Count(Managed);
        // Wall time, as PIL's loop and the loader are timed.
        double ours = WallTime(files, f =>
        {
            if (!Managed(f)) LibvipsFull(f.Bytes);
        });
        double libvips = WallTime(files, f => LibvipsFull(f.Bytes));
        return new DecodeOnly(files.Count, 1e6 / ours, 1e6 / libvips, files.Count == 0 ? 0 : managed / (double)files.Count);
    }

    private static void LibvipsFull(byte[] bytes)
    {
        using var image = Image.NewFromBuffer(bytes, access: Enums.Access.Sequential);
        IntPtr pixels = image.WriteToMemory(out _);
        NetVips.NetVips.Free(pixels);
    }

    public static async Task<IReadOnlyList<StageCost>> MeasureAsync(SampleIndex data, string recipeName, int images, int batchSize, CancellationToken cancellationToken)
    {
        LibvipsSettings.ForGraphParallelism();
        var recipe = RecipeCatalog.ByName(recipeName);
        var items = await PrepareAsync(data, recipe, images, cancellationToken);
        var stages = new List<StageCost>();
        var views = recipe.Views;
        if (items.Count > 0)
        {
            stages.Add(new("header", Time(items, p => ImageHeader.Read(p.Bytes, DecodeLimits.Default)), "size, EXIF orientation, refusals (libvips header read, end-of-image check)"));
            stages.Add(new("draw", Time(items, p =>
            {
                var random = StableRandom.For(1, "augment", 0, 0);
                recipe.Draw(p.Header, ref random);
            }), "the recipe's random decisions (AugmentParams)"));

            // Regions as the Augmenter cuts them.
            var regions = items.Select(p => Region(p)).ToList();
            var managedItems = regions.Where(r => r.Managed).ToList();
            byte[] buffer = new byte[regions.Count == 0 ? 0 : regions.Max(r => 3 * r.Width * r.Height)];
            if (managedItems.Count > 0)
            {
                // Entropy decoding alone: the crop's bottom-right pixel needs every MCU down to the crop's last row decoded
                // and one block transformed.
                double entropy = Time(managedItems, r => JpegRegionDecoder.ForThread.TryDecode(r.Item.Bytes, r.Left + r.Width - 1, r.Top + r.Height - 1, 1, 1, buffer), items.Count);
                double region = Time(managedItems, r => JpegRegionDecoder.ForThread.TryDecode(r.Item.Bytes, r.Left, r.Top, r.Width, r.Height, buffer), items.Count);
                stages.Add(new("decode: entropy", entropy, $"managed JPEG decoder, Huffman decoding down to the crop's last MCU row ({managedItems.Count} of {items.Count} images)"));
                stages.Add(new("decode: idct+colour", Math.Max(0, region - entropy), "IDCT, fancy upsampling and YCbCr→RGB of the blocks the crop touches, planar output"));
                if (items.Any(p => p.Parameters.Views.Any(v => v.Ops.Any(op => op is Contrast { WholeImage: true }))))
                {
                    double withMean = Time(managedItems, r => JpegRegionDecoder.ForThread.TryDecode(r.Item.Bytes, r.Left, r.Top, r.Width, r.Height, buffer, true, out _), items.Count);
                    stages.Add(new("decode: image mean", Math.Max(0, withMean - region), "contrast's whole-image mean grey: the entropy pass continued to the last MCU row, luma DCs summed"));
                }
            }
            var libvipsItems = regions.Where(r => !r.Managed).ToList();
            if (libvipsItems.Count > 0)
                stages.Add(new("decode: libvips", Time(libvipsItems, r => LibvipsRegion(r.Item), items.Count), $"libvips region decode with shrink-on-load + deinterleave ({libvipsItems.Count} of {items.Count} images)"));
            var decoded = regions.Select(r => Decode(r)).ToList();

            var targets = views.Select(v => new byte[v.Bytes]).ToArray();
            stages.Add(new("resample", Time(decoded, d =>
            {
                for (int v = 0; v < views.Count; v++)
                {
                    var view = d.Parameters.Views[v];
                    var plan = PlanarResampler.Plan.For(d.Width, d.Height, d.Placement.Map(view.Crop), view.Width, view.Height, view.Kernel);
                    for (int c = 0; c < 3; c++)
                        PlanarResampler.Resize(plan, d.Planar.AsSpan(c * d.Width * d.Height, d.Width * d.Height), targets[v].AsSpan(c * view.Width * view.Height, view.Width * view.Height), view.Width);
                }
            }), "crop → view size, antialiased (PIL's kernels), planar, every view"));
            stages.Add(new("flip", Time(decoded, d =>
            {
                for (int v = 0; v < views.Count; v++)
                {
                    var view = d.Parameters.Views[v];
                    if (!view.Flip) continue;
                    for (int r = 0; r < 3 * view.Height; r++) targets[v].AsSpan(r * view.Width, view.Width).Reverse();
                }
            }), "horizontal mirror of flipped views"));
            stages.Add(new("jitter/ops", Time(decoded, d =>
            {
                for (int v = 0; v < views.Count; v++)
                {
                    var view = d.Parameters.Views[v];
                    var image = new PlanarImage(targets[v].AsMemory(0, 3 * view.Width * view.Height), view.Width, view.Height);
                    foreach (var op in view.Ops) op.Apply(image);
                }
            }), "the pixel operations (colour jitter, RandAugment, blur, …)"));
            var floats = views.Select(v => new float[v.Bytes]).ToArray();
            stages.Add(new("normalise", Time(decoded, d =>
            {
                for (int v = 0; v < views.Count; v++) PixelNormalizer.ToFloat(targets[v], floats[v], imageNetStatistics: v == 0);
            }), "uint8 → float32, ImageNet mean/std (view 0)"));
            var batch = views.Select(v => new float[batchSize * v.Bytes]).ToArray();
            int row = 0;
            stages.Add(new("collate", Time(decoded, d =>
            {
                for (int v = 0; v < views.Count; v++) floats[v].CopyTo(batch[v].AsSpan(row * views[v].Bytes));
                row = (row + 1) % batchSize;
            }), "copy into the batch's NCHW buffer"));
            foreach (var d in decoded) ArrayPool<byte>.Shared.Return(d.Planar);
        }
        // The loader on one worker, everything included; the difference is queueing, allocation and GC.
        double before = ProcessCpuSeconds();
        var result = await LoaderBenchmark.RunAsync(data, recipe, 1, Math.Min(images, data.Count), batchSize, cancellationToken);
        double loaderCpu = (ProcessCpuSeconds() - before) * 1e6 / Math.Max(1, Math.Min(images, data.Count));
        double sum = stages.Sum(s => s.MicrosecondsPerImage);
        if (items.Count > 0) stages.Add(new("loader overhead", Math.Max(0, loaderCpu - sum), "reads, Dataflow queueing, masks, allocation and GC: the loader's CPU per image less the stages above"));
        stages.Add(new("loader total", loaderCpu, $"DataflowLoader, 1 decode worker, batch {batchSize}: CPU per image ({result.ImagesPerSecond:F1} img/s wall)"));
        return stages;
    }

    private sealed record RegionInfo(Prepared Item, bool Managed, int Left, int Top, int Width, int Height);

    private sealed record Decoded(AugmentParams Parameters, byte[] Planar, int Width, int Height, RegionPlacement Placement);

    private static CropBox Union(AugmentParams parameters)
    {
        var views = parameters.Views;
        double x = views.Min(v => v.Crop.X), y = views.Min(v => v.Crop.Y);
        return new CropBox(x, y, views.Max(v => v.Crop.Right) - x, views.Max(v => v.Crop.Bottom) - y);
    }

    private static int Shrink(Prepared p) => p.Parameters.Views.Min(v => RegionDecoder.ShrinkFactor(p.Header, v.Crop, v.Width, v.Height));

    private static RegionInfo Region(Prepared p)
    {
        var union = Union(p.Parameters);
        var header = p.Header;
        int left = Math.Clamp((int)Math.Round(union.X), 0, header.Width - 1);
        int top = Math.Clamp((int)Math.Round(union.Y), 0, header.Height - 1);
        int right = Math.Clamp((int)Math.Round(union.X + union.Width), left + 1, header.Width);
        int bottom = Math.Clamp((int)Math.Round(union.Y + union.Height), top + 1, header.Height);
        bool managed = header.IsJpeg && header.Orientation == 1 && Shrink(p) == 1 &&
                       JpegRegionDecoder.ForThread.TryDecode(p.Bytes, left, top, right - left, bottom - top, new byte[3 * (right - left) * (bottom - top)]);
        return new RegionInfo(p, managed, left, top, right - left, bottom - top);
    }

    private static unsafe (byte[] Planar, int Width, int Height, RegionPlacement Placement) LibvipsRegion(Prepared p)
    {
        using var region = RegionDecoder.LoadRegion(p.Bytes, p.Header, Union(p.Parameters), Shrink(p), out var placement);
        IntPtr pixels = region.WriteToMemory(out _);
        try
        {
            byte[] planar = ArrayPool<byte>.Shared.Rent(3 * region.Width * region.Height);
            new PlanarImage(planar, region.Width, region.Height).FromInterleaved(new ReadOnlySpan<byte>((void*)pixels, 3 * region.Width * region.Height));
            ArrayPool<byte>.Shared.Return(planar);
            return (planar, region.Width, region.Height, placement);
        }
        finally
        {
            NetVips.NetVips.Free(pixels);
        }
    }

    private static unsafe Decoded Decode(RegionInfo r)
    {
        if (r.Managed)
        {
            byte[] planar = ArrayPool<byte>.Shared.Rent(3 * r.Width * r.Height);
            JpegRegionDecoder.ForThread.TryDecode(r.Item.Bytes, r.Left, r.Top, r.Width, r.Height, planar);
            return new Decoded(r.Item.Parameters, planar, r.Width, r.Height, new RegionPlacement(r.Left, r.Top, 1, 1));
        }
        using var region = RegionDecoder.LoadRegion(r.Item.Bytes, r.Item.Header, Union(r.Item.Parameters), Shrink(r.Item), out var placement);
        IntPtr pixels = region.WriteToMemory(out _);
        try
        {
            byte[] planar = ArrayPool<byte>.Shared.Rent(3 * region.Width * region.Height);
            new PlanarImage(planar, region.Width, region.Height).FromInterleaved(new ReadOnlySpan<byte>((void*)pixels, 3 * region.Width * region.Height));
            return new Decoded(r.Item.Parameters, planar, region.Width, region.Height, placement);
        }
        finally
        {
            NetVips.NetVips.Free(pixels);
        }
    }
}
