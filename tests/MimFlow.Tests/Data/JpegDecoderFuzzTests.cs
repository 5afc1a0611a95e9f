using System.Buffers.Binary;
using System.Diagnostics;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using NetVips;
using Xunit.Abstractions;

namespace MimFlow.Tests.Data;

/// <summary>
/// Seeded structure-aware damage to small JPEGs (4:2:0, 4:4:4, 4:2:2, 4:4:0, restart intervals, grey, progressive, EXIF) through
/// the managed decoder and its header reader, the way the loader calls them (header, drawn views, render with the
/// libvips fallback) and directly: every case either gives pixels of the declared size or is refused with a
/// <see cref="BadImageException"/> and a reason; no other exception, no hang, no large allocation. Whenever the
/// managed decoder accepts a whole damaged image, libvips (libjpeg-turbo) must accept it too and give the same pixels.
/// </summary>
public sealed class JpegDecoderFuzzTests(ITestOutputHelper output)
{
    /// <summary>Cases per source image; with the ten sources below, 5,010 cases (about 4 s; 36,000 passed with other seeds).</summary>
    private const int CasesPerSource = 500;

    /// <summary>The most one case may take (a hang otherwise); cases take about a millisecond.</summary>
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(10);

    /// <summary>The most managed memory one case may allocate: the sources are tiny, and the loader path runs under
    /// <see cref="Limits"/> (a header may claim up to 4 MP).</summary>
    private const long CaseAllocationLimit = 96L << 20;

    /// <summary>The loader's limits, with a pixel limit small enough that header-claimed sizes stay cheap.</summary>
    private static readonly DecodeLimits Limits = new(MaxPixels: 4_000_000);

    internal static byte[] Noise(int width, int height, int seed)
    {
        var random = new Random(seed);
        byte[] pixels = new byte[3 * width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < 3; c++)
                    pixels[3 * (y * width + x) + c] = (byte)Math.Clamp(128 + 100 * Math.Sin(x / 6.0 + c) * Math.Cos(y / 8.0 + 2 * c) + random.Next(-25, 26), 0, 255);
        return pixels;
    }

    private static byte[] Vips(int width, int height, int seed, int quality, Enums.ForeignSubsample subsample, int restart = 0, bool progressive = false)
    {
        using var image = Image.NewFromMemory(Noise(width, height, seed), width, height, 3, Enums.BandFormat.Uchar).Copy(interpretation: Enums.Interpretation.Srgb);
        return image.JpegsaveBuffer(q: quality, subsampleMode: subsample, restartInterval: restart, interlace: progressive, keep: Enums.ForeignKeep.None);
    }

    internal static (string Name, Func<byte[]> Make)[] Sources =>
    [
        ("4:2:0", () => Vips(48, 40, 1, 85, Enums.ForeignSubsample.On)),
        ("4:4:4 restart 2", () => Vips(41, 23, 2, 90, Enums.ForeignSubsample.Off, 2)),
        ("4:2:0 restart 1", () => Vips(35, 50, 3, 75, Enums.ForeignSubsample.On, 1)),
        ("4:2:2 restart 3", () => JpegWriter.Encode(Noise(44, 30, 4), 44, 30, new JpegLayout(2, 1, 80, RestartInterval: 3, App0: JpegLayout.Jfif))),
        ("4:4:0", () => JpegWriter.Encode(Noise(30, 44, 5), 30, 44, new JpegLayout(1, 2, 85, App0: JpegLayout.Jfif))),
        ("4:4:4 no JFIF", () => JpegWriter.Encode(Noise(26, 19, 6), 26, 19, new JpegLayout(1, 1, 70))),
        ("grey", () => TestImages.GreyJpeg(40, 32)),
        ("progressive", () => Vips(36, 28, 7, 80, Enums.ForeignSubsample.On, progressive: true)),
        ("EXIF orientation 6", () => TestImages.OrientedJpeg(40, 24, 6)),
        ("EXIF orientation 1", () => TestImages.OrientedJpeg(33, 17, 1)),
    ];

    [Fact]
    public void Damaged_jpegs_decode_to_their_declared_size_or_are_refused_with_a_reason()
    {
        LibvipsSettings.ForGraphParallelism();
        var cases = new List<(string Label, byte[] Bytes)>();
        int seed = 1000;
        foreach (var (name, make) in Sources)
        {
            byte[] original = make();
            cases.Add(($"{name} intact", original));
            var random = new Random(seed++);
            for (int i = 0; i < CasesPerSource; i++)
            {
                var labels = new List<string>();
                byte[] damaged = JpegMutations.Mutate(original, random, labels);
                while (random.Next(4) == 0 && labels.Count < 4) damaged = JpegMutations.Mutate(damaged, random, labels);
                cases.Add(($"{name} #{i}: {string.Join("; ", labels)}", damaged));
            }
        }

        var failures = new List<string>();
        var tally = new Dictionary<string, int>();
        long worstAllocation = 0;
        string worstAllocationCase = "";
        int current = -1;
        long started = 0;
        var watch = Stopwatch.StartNew();
        // One thread runs every case, in order, so the per-thread decoder carries its state (planes, cached Huffman
        // tables) from case to case as it does in the loader; this thread watches the clock.
        var worker = new Thread(() =>
        {
            for (int i = 0; i < cases.Count; i++)
            {
                Volatile.Write(ref started, watch.ElapsedTicks);
                Volatile.Write(ref current, i);
                long before = GC.GetAllocatedBytesForCurrentThread();
                string outcome;
                try
                {
                    outcome = RunCase(cases[i].Bytes, i, out string? problem);
                    if (problem is not null) lock (failures) failures.Add($"{cases[i].Label}: {problem}");
                }
                catch (Exception e)
                {
                    outcome = "unexpected exception";
                    lock (failures) failures.Add($"{cases[i].Label}: {e.GetType().Name}: {e.Message}{Environment.NewLine}    {e.StackTrace?.Split('\n').FirstOrDefault()?.Trim()}");
                }
                long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                lock (failures)
                {
                    tally[outcome] = tally.GetValueOrDefault(outcome) + 1;
                    if (allocated > worstAllocation) (worstAllocation, worstAllocationCase) = (allocated, cases[i].Label);
                    if (allocated > CaseAllocationLimit) failures.Add($"{cases[i].Label}: allocated {allocated:N0} bytes");
                }
            }
            Volatile.Write(ref current, cases.Count);
        }, 8 << 20) { IsBackground = true, Name = "jpeg fuzz" };
        worker.Start();
        while (!worker.Join(50))
        {
            int at = Volatile.Read(ref current);
            if (at >= 0 && at < cases.Count && watch.ElapsedTicks - Volatile.Read(ref started) > CaseLimit.TotalSeconds * Stopwatch.Frequency && Volatile.Read(ref current) == at)
                Assert.Fail($"{cases[at].Label}: no outcome after {CaseLimit.TotalSeconds:F0} s (a hang); {at} cases done");
        }

        output.WriteLine($"{cases.Count} cases in {watch.Elapsed.TotalSeconds:F1} s; most allocated by one case: {worstAllocation:N0} bytes ({worstAllocationCase})");
        foreach (var (outcome, count) in tally.OrderByDescending(t => t.Value)) output.WriteLine($"  {count,5}  {outcome}");
        foreach (string failure in failures.Take(60)) output.WriteLine(failure);
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} cases failed:{Environment.NewLine}{string.Join(Environment.NewLine, failures.Take(30))}");
    }

    /// <summary>One damaged file through the loader's path and the decoder's own entry points; returns the outcome.</summary>
    private static string RunCase(byte[] bytes, int index, out string? problem)
    {
        problem = null;
        string outcome;
        bool accepted = false;
        // The loader: header (refusals), drawn views, render (managed decoder, else libvips).
        try
        {
            var header = ImageHeader.Read(bytes, Limits);
            accepted = true;
            var recipe = new PretrainRecipe(Size: 32, SecondViewSize: 16);
            var random = StableRandom.For(5, (ulong)index);
            var parameters = recipe.Draw(header, ref random);
            var views = recipe.Views.Select(v => new byte[v.Bytes]).ToArray();
            Augmenter.Render(bytes, header, parameters, recipe.Views, views.Select(v => new Memory<byte>(v)).ToArray());
            outcome = "rendered";
        }
        catch (BadImageException e)
        {
            if (string.IsNullOrWhiteSpace(e.Reason)) problem = "refused without a reason";
            outcome = "refused: " + Category(e.Reason);
        }

        // The decoder's entry points, on this thread's instance (as the loader uses it). None may throw, and every
        // refusal must say why without being a failed internal bounds check.
        var decoder = JpegRegionDecoder.ForThread;
        string? refusal = null;
        void Check(bool decoded, string call)
        {
            if (decoded) return;
            if (string.IsNullOrWhiteSpace(decoder.LastRefusal)) refusal ??= $"{call} refused without a reason";
            else if (decoder.LastRefusal.Contains("internal", StringComparison.Ordinal)) refusal ??= $"{call}: {decoder.LastRefusal}";
        }
        bool headerRead = decoder.TryReadHeader(bytes, out int width, out int height, out int orientation);
        Check(headerRead, "TryReadHeader");
        if (headerRead)
        {
            if (width < 1 || height < 1 || orientation is < 1 or > 8) problem ??= $"header read as {width}×{height}, orientation {orientation}";
            problem ??= CompareHeaderWithLibvips(bytes, width, height, orientation);
            if ((long)width * height <= 1 << 20)
            {
                byte[] planar = new byte[3 * width * height];
                bool whole = decoder.TryDecode(bytes, 0, 0, width, height, planar, true, out double mean);
                Check(whole, "TryDecode (whole image)");
                if (whole)
                {
                    outcome += ", managed decode";
                    if (mean is < 0 or > 255 || double.IsNaN(mean)) problem ??= $"mean grey {mean}";
                    // Files the loader refuses from their header (truncated: no end-of-image marker; over the limits)
                    // never reach the decoder; for the others, libjpeg-turbo is the reference.
                    if (accepted) problem ??= CompareWithLibvips(bytes, width, height, planar);
                }
                var random = new Random(index);
                int w = random.Next(1, width + 1), h = random.Next(1, height + 1), x = random.Next(width - w + 1), y = random.Next(height - h + 1);
                Check(decoder.TryDecode(bytes, x, y, w, h, new byte[3 * w * h]), "TryDecode (region)");
            }
            else Check(decoder.TryDecode(bytes, width / 2, height / 2, Math.Min(64, width - width / 2), Math.Min(64, height - height / 2), new byte[3 * 64 * 64]), "TryDecode (region)");
        }
        Check(decoder.TryLumaMean(bytes, out _), "TryLumaMean");
        problem ??= refusal;
        return outcome;
    }

    /// <summary>The managed header reader took the file: libvips must read the same header (ImageHeader's libvips path).</summary>
    private static string? CompareHeaderWithLibvips(byte[] bytes, int width, int height, int orientation)
    {
        try
        {
            using var image = Image.NewFromBuffer(bytes, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
            int vipsOrientation = image.Contains("orientation") ? Math.Clamp((int)image.Get("orientation"), 1, 8) : 1;
            var managed = ("jpegload_buffer", width, height, orientation, 3, Enums.Interpretation.Srgb);
            var vips = ((string)image.Get("vips-loader"), image.Width, image.Height, vipsOrientation, image.Bands, image.Interpretation);
            return managed == vips ? null : $"managed header {managed}, libvips' {vips}";
        }
        catch (VipsException e)
        {
            return $"the managed header reader accepted a file libvips refuses: {ImageHeader.VipsReason(e)}";
        }
    }

    /// <summary>The managed decoder took the whole file: libjpeg-turbo must take it too (no fatal error) and give the same pixels.</summary>
    private static string? CompareWithLibvips(byte[] bytes, int width, int height, byte[] planar)
    {
        byte[] reference;
        try
        {
            using var image = Image.JpegloadBuffer(bytes, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
            if (image.Width != width || image.Height != height || image.Bands != 3)
                return $"managed decode of {width}×{height}, libvips reads {image.Width}×{image.Height}×{image.Bands}";
            reference = image.WriteToMemory<byte>();
        }
        catch (VipsException e)
        {
            return $"the managed decoder accepted a file libvips refuses: {ImageHeader.VipsReason(e)}";
        }
        int plane = width * height, differing = 0;
        for (int i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++)
                if (planar[c * plane + i] != reference[3 * i + c]) differing++;
        return differing == 0 ? null : $"managed pixels differ from libvips' in {differing} of {3 * plane} values";
    }

    /// <summary>A refusal's reason without its numbers, for the tally.</summary>
    private static string Category(string reason)
    {
        string text = reason.Length > 70 ? reason[..70] : reason;
        return new string(text.Select(c => char.IsDigit(c) ? '#' : c).ToArray());
    }
}

/// <summary>
/// Seeded damage that knows a JPEG's layout: truncation, byte and bit flips (anywhere, in the header segments, in the
/// entropy data), segments duplicated, removed or reordered, length fields rewritten, SOF sizes, sampling factors,
/// precision and table ids, Huffman counts and symbols, quantisation ids, scan selectors, restart intervals and
/// markers, EXIF blocks with hostile offsets, counts and loops, short JFIF and Adobe segments, other SOF types.
/// </summary>
internal static class JpegMutations
{
    public static byte[] Mutate(byte[] jpeg, Random random, List<string> labels)
    {
        if (jpeg.Length < 4) return Truncate(jpeg, random.Next(jpeg.Length + 1), labels);
        var segments = JpegWriter.Segments(jpeg);
        int headerEnd = segments.Count > 0 && segments[^1].Marker == 0xDA ? segments[^1].Offset + 2 + segments[^1].Length : Math.Min(jpeg.Length, 2 + segments.Sum(s => 2 + s.Length));
        headerEnd = Math.Clamp(headerEnd, 2, jpeg.Length);
        byte[] bytes = (byte[])jpeg.Clone();
        int length = bytes.Length;
        (byte Marker, int Offset, int Length)? Pick(params byte[] markers)
        {
            var matching = segments.Where(s => markers.Length == 0 || markers.Contains(s.Marker)).Where(s => s.Offset + 2 + s.Length <= length).ToList();
            return matching.Count == 0 ? null : matching[random.Next(matching.Count)];
        }

        switch (random.Next(20))
        {
            case 0:
            {
                int at = random.Next(2) == 0 ? random.Next(headerEnd + 1) : random.Next(length);
                return Truncate(bytes, at, labels);
            }
            case 1:
            {
                int n = 1 + random.Next(4);
                for (int k = 0; k < n; k++) Flip(bytes, random.Next(length), random, labels);
                return bytes;
            }
            case 2:
            {
                int n = 1 + random.Next(3);
                for (int k = 0; k < n; k++) Flip(bytes, 2 + random.Next(Math.Max(1, headerEnd - 2)), random, labels);
                return bytes;
            }
            case 3:
            {
                if (Pick() is not { } s) break;
                var boundaries = segments.Select(t => t.Offset).Append(headerEnd).ToList();
                int at = boundaries[random.Next(boundaries.Count)];
                labels.Add($"segment FF{s.Marker:X2} at {s.Offset} copied to {at}");
                return [.. bytes[..at], .. bytes.AsSpan(s.Offset, 2 + s.Length).ToArray(), .. bytes[at..]];
            }
            case 4:
            {
                if (Pick() is not { } s) break;
                labels.Add($"segment FF{s.Marker:X2} at {s.Offset} removed");
                return [.. bytes[..s.Offset], .. bytes[(s.Offset + 2 + s.Length)..]];
            }
            case 5:
            {
                if (Pick() is not { } s) break;
                int[] choices = [0, 1, 2, 3, s.Length - 1, s.Length + 1, s.Length - 2 - random.Next(8), s.Length + 2 + random.Next(64), 0xFFFF, random.Next(0x10000), length - s.Offset];
                int value = Math.Clamp(choices[random.Next(choices.Length)], 0, 0xFFFF);
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(s.Offset + 2), (ushort)value);
                labels.Add($"length of FF{s.Marker:X2} at {s.Offset}: {s.Length} → {value}");
                return bytes;
            }
            case 6:
            {
                if (Pick(0xC0, 0xC1, 0xC2) is not { } s || s.Length < 7) break;
                int[] sizes = [0, 1, 2, 7, 8, 9, 15, 16, 17, 1000, 4096, 65500, 65501, 65535, random.Next(0x10000)];
                int field = random.Next(3); // height, width, both
                int height = sizes[random.Next(sizes.Length)], width = sizes[random.Next(sizes.Length)];
                if (field != 1) BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(s.Offset + 5), (ushort)height);
                if (field != 0) BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(s.Offset + 7), (ushort)width);
                labels.Add($"SOF size: {(field != 0 ? width.ToString() : "·")}×{(field != 1 ? height.ToString() : "·")}");
                return bytes;
            }
            case 7:
            {
                if (Pick(0xC0, 0xC1) is not { } s || s.Length < 8) break;
                int components = bytes[s.Offset + 9];
                int what = random.Next(5);
                if (what == 0)
                {
                    byte[] precisions = [0, 1, 7, 12, 16, 255];
                    bytes[s.Offset + 4] = precisions[random.Next(precisions.Length)];
                    labels.Add($"SOF precision {bytes[s.Offset + 4]}");
                }
                else if (what == 1)
                {
                    bytes[s.Offset + 9] = (byte)random.Next(6);
                    labels.Add($"SOF component count {bytes[s.Offset + 9]}");
                }
                else
                {
                    int c = random.Next(Math.Max(1, components));
                    int at = s.Offset + 10 + 3 * c + (what - 2);
                    if (at >= s.Offset + 2 + s.Length) break;
                    byte[] sampling = [0x00, 0x01, 0x10, 0x11, 0x12, 0x21, 0x22, 0x13, 0x31, 0x33, 0x44, 0x41, 0x14, 0x55, 0xFF, 0x24, 0x42];
                    bytes[at] = what switch
                    {
                        2 => (byte)random.Next(256), // component id
                        3 => sampling[random.Next(sampling.Length)],
                        _ => (byte)random.Next(6), // quantisation table
                    };
                    labels.Add($"SOF component {c} {(what == 2 ? "id" : what == 3 ? "sampling" : "quant table")} = 0x{bytes[at]:X2}");
                }
                return bytes;
            }
            case 8:
            {
                if (Pick(0xC4) is not { } s) break;
                // The tables inside the segment: class/id byte, 16 counts, symbols.
                var tables = new List<int>();
                for (int p = s.Offset + 4; p + 17 <= s.Offset + 2 + s.Length;)
                {
                    tables.Add(p);
                    int count = 0;
                    for (int l = 1; l <= 16; l++) count += bytes[p + l];
                    p += 17 + count;
                }
                if (tables.Count == 0) break;
                int t = tables[random.Next(tables.Count)];
                int symbols = 0;
                for (int l = 1; l <= 16; l++) symbols += bytes[t + l];
                switch (random.Next(6))
                {
                    case 0:
                        bytes[t] = (byte)(random.Next(3) << 4 | random.Next(6));
                        labels.Add($"DHT class/id 0x{bytes[t]:X2}");
                        break;
                    case 1:
                    {
                        int l = 1 + random.Next(16);
                        bytes[t + l] = (byte)Math.Min(255, bytes[t + l] + 1 + random.Next(4));
                        labels.Add($"DHT count of length {l} raised to {bytes[t + l]} (over-subscribed or longer than the segment)");
                        break;
                    }
                    case 2:
                    {
                        int l = 1 + random.Next(16);
                        if (bytes[t + l] == 0) break;
                        bytes[t + l]--;
                        bytes[t + 1 + random.Next(16)]++;
                        labels.Add($"DHT count moved from length {l} (incomplete or over-subscribed code)");
                        break;
                    }
                    case 3:
                        for (int l = 1; l <= 16; l++) bytes[t + l] = 0;
                        labels.Add("DHT counts zeroed");
                        break;
                    case 4:
                        if (symbols == 0 || t + 17 + symbols > length) break;
                        int at = t + 17 + random.Next(symbols);
                        bytes[at] = (byte)(random.Next(2) == 0 ? random.Next(256) : 16 + random.Next(240));
                        labels.Add($"DHT symbol {at - t - 17} = 0x{bytes[at]:X2}");
                        break;
                    default:
                        bytes[t + 1] = (byte)(random.Next(2) + 1);
                        bytes[t + 2] = 4;
                        labels.Add($"DHT short codes {bytes[t + 1]} of length 1, 4 of length 2");
                        break;
                }
                return bytes;
            }
            case 9:
            {
                if (Pick(0xDB) is not { } s) break;
                int table = s.Offset + 4 + (random.Next(2) == 0 || s.Length < 132 ? 0 : 65);
                if (random.Next(2) == 0) bytes[table] = (byte)(random.Next(3) << 4 | random.Next(6));
                else bytes[table + 1 + random.Next(64)] = (byte)random.Next(2);
                labels.Add($"DQT byte changed at {table}");
                return bytes;
            }
            case 10:
            {
                if (Pick(0xDA) is not { } s || s.Length < 6) break;
                int at = s.Offset + 4 + random.Next(s.Length - 2);
                bytes[at] = random.Next(3) switch { 0 => (byte)random.Next(256), 1 => (byte)(random.Next(5) << 4 | random.Next(5)), _ => (byte)random.Next(6) };
                labels.Add($"SOS byte {at - s.Offset - 4} = 0x{bytes[at]:X2}");
                return bytes;
            }
            case 11:
            {
                int[] values = [0, 1, 2, 3, 7, 0xFFFF, random.Next(0x10000)];
                int value = values[random.Next(values.Length)];
                if (Pick(0xDD) is { } s && s.Length == 4)
                {
                    BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(s.Offset + 4), (ushort)value);
                    labels.Add($"DRI {value}");
                    return bytes;
                }
                if (Pick(0xDA) is not { } sos) break;
                labels.Add($"DRI {value} inserted");
                return [.. bytes[..sos.Offset], 0xFF, 0xDD, 0, 4, (byte)(value >> 8), (byte)value, .. bytes[sos.Offset..]];
            }
            case 12:
            {
                var restarts = new List<int>();
                for (int p = headerEnd; p + 1 < length; p++)
                    if (bytes[p] == 0xFF && bytes[p + 1] is >= 0xD0 and <= 0xD7) restarts.Add(p);
                int what = random.Next(4);
                if (restarts.Count == 0 || what == 3)
                {
                    if (headerEnd >= length - 2) break;
                    int at = headerEnd + random.Next(length - 2 - headerEnd);
                    if (at > 0 && bytes[at - 1] == 0xFF) break;
                    byte marker = (byte)(random.Next(2) == 0 ? 0xD0 + random.Next(8) : random.Next(0xC0, 0x100));
                    labels.Add($"marker FF{marker:X2} inserted in the entropy data at {at}");
                    return [.. bytes[..at], 0xFF, marker, .. bytes[at..]];
                }
                int r = restarts[random.Next(restarts.Count)];
                if (what == 0)
                {
                    labels.Add($"restart marker at {r} removed");
                    return [.. bytes[..r], .. bytes[(r + 2)..]];
                }
                if (what == 1)
                {
                    bytes[r + 1] = (byte)(0xD0 + random.Next(8));
                    labels.Add($"restart marker at {r} renumbered FF{bytes[r + 1]:X2}");
                    return bytes;
                }
                labels.Add($"restart marker at {r} doubled");
                return [.. bytes[..r], 0xFF, bytes[r + 1], .. bytes[r..]];
            }
            case 13:
            {
                if (Pick(0xC0, 0xC1) is not { } s) break;
                byte[] types = [0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xC0];
                bytes[s.Offset + 1] = types[random.Next(types.Length)];
                labels.Add($"SOF marker FF{bytes[s.Offset + 1]:X2}");
                return bytes;
            }
            case 14:
            {
                if (segments.Count < 2) break;
                int i = random.Next(segments.Count), j = random.Next(segments.Count);
                if (i == j) break;
                var order = Enumerable.Range(0, segments.Count).ToList();
                (order[i], order[j]) = (order[j], order[i]);
                var rebuilt = new List<byte> { 0xFF, 0xD8 };
                foreach (int k in order)
                {
                    var s = segments[k];
                    if (s.Offset + 2 + s.Length > length) return bytes;
                    rebuilt.AddRange(bytes.AsSpan(s.Offset, 2 + s.Length).ToArray());
                }
                rebuilt.AddRange(bytes[headerEnd..]);
                labels.Add($"segments FF{segments[i].Marker:X2} and FF{segments[j].Marker:X2} swapped");
                return rebuilt.ToArray();
            }
            case 15:
            {
                byte[] exif = HostileExif(random, out string what);
                int copies = random.Next(5) == 0 ? 2 : 1;
                var inserted = new List<byte>();
                for (int k = 0; k < copies; k++) JpegWriter.Segment(inserted, 0xE1, exif);
                labels.Add($"{copies} EXIF block(s): {what}");
                return [.. bytes[..2], .. inserted, .. bytes[2..]];
            }
            case 16:
            {
                var inserted = new List<byte>();
                if (random.Next(2) == 0)
                {
                    int extra = random.Next(12);
                    JpegWriter.Segment(inserted, 0xE0, [.. "JFIF\0"u8, .. Enumerable.Range(0, extra).Select(_ => (byte)random.Next(256))]);
                    labels.Add($"JFIF APP0 of {5 + extra} bytes");
                }
                else
                {
                    int size = 5 + random.Next(10);
                    byte[] adobe = new byte[size];
                    "Adobe"u8.CopyTo(adobe);
                    if (size == 12 || random.Next(2) == 0) Array.Resize(ref adobe, 12);
                    adobe[^1] = (byte)random.Next(4);
                    JpegWriter.Segment(inserted, 0xEE, adobe);
                    labels.Add($"Adobe APP14 of {adobe.Length} bytes, transform {adobe[^1]}");
                }
                int at = segments.Count > 0 && random.Next(2) == 0 ? segments[random.Next(segments.Count)].Offset : 2;
                return [.. bytes[..at], .. inserted, .. bytes[at..]];
            }
            case 17:
            {
                if (headerEnd >= length - 2) break;
                int at = headerEnd + random.Next(length - 2 - headerEnd);
                int run = Math.Min(length - 2 - at, 1 + random.Next(12));
                switch (random.Next(3))
                {
                    case 0:
                        bytes.AsSpan(at, run).Fill(0);
                        labels.Add($"{run} zero bytes in the entropy data at {at}");
                        break;
                    case 1:
                        for (int k = 0; k < run; k++) bytes[at + k] = (byte)random.Next(256);
                        labels.Add($"{run} random bytes in the entropy data at {at}");
                        break;
                    default:
                        Flip(bytes, at, random, labels);
                        break;
                }
                return bytes;
            }
            case 18:
            {
                // A segment where libjpeg reads markers: before the frame, between the tables, or after the scan's data.
                byte[] markers = [0x02, 0x4F, 0xBF, 0xC8, 0xDC, 0xDE, 0xDF, 0xE5, 0xEF, 0xF0, 0xF7, 0xFD, 0xFE, (byte)random.Next(0x02, 0xFF)];
                byte marker = markers[random.Next(markers.Length)];
                int size = random.Next(2) == 0 ? 4 : random.Next(2, 40);
                var inserted = new List<byte>();
                JpegWriter.Segment(inserted, marker, Enumerable.Range(0, size - 2).Select(_ => (byte)random.Next(256)).ToArray());
                bool tail = random.Next(3) == 0 && length >= 2 && bytes[^2] == 0xFF && bytes[^1] == 0xD9;
                int at = tail ? length - 2 : segments.Count > 0 ? segments[random.Next(segments.Count)].Offset : 2;
                labels.Add($"segment FF{marker:X2} of {size} bytes inserted at {at}{(tail ? " (before the end-of-image marker)" : "")}");
                return [.. bytes[..at], .. inserted, .. bytes[at..]];
            }
            default:
            {
                // Fill bytes or garbage between segments.
                if (segments.Count == 0) break;
                int at = segments[random.Next(segments.Count)].Offset;
                byte[] junk = random.Next(2) == 0 ? Enumerable.Repeat((byte)0xFF, 1 + random.Next(4)).ToArray() : [(byte)random.Next(256), (byte)random.Next(256)];
                labels.Add($"{junk.Length} bytes {Convert.ToHexString(junk)} inserted at {at}");
                return [.. bytes[..at], .. junk, .. bytes[at..]];
            }
        }
        Flip(bytes, random.Next(length), random, labels);
        return bytes;
    }

    private static byte[] Truncate(byte[] bytes, int at, List<string> labels)
    {
        labels.Add($"truncated at {at}/{bytes.Length}");
        return bytes[..at];
    }

    private static void Flip(byte[] bytes, int at, Random random, List<string> labels)
    {
        if (random.Next(2) == 0)
        {
            int bit = random.Next(8);
            bytes[at] ^= (byte)(1 << bit);
            labels.Add($"bit {bit} of byte {at} flipped");
        }
        else
        {
            bytes[at] = (byte)random.Next(256);
            labels.Add($"byte {at} = 0x{bytes[at]:X2}");
        }
    }

    /// <summary>"Exif\0\0" and a TIFF structure with hostile parts: byte order, magic, IFD offsets past the end or
    /// pointing at themselves, huge entry counts, the orientation tag with other types, counts and values.</summary>
    public static byte[] HostileExif(Random random, out string what)
    {
        bool little = random.Next(2) == 0;
        var tiff = new List<byte>();
        void U16(int v) => tiff.AddRange(little ? [(byte)v, (byte)(v >> 8)] : [(byte)(v >> 8), (byte)v]);
        void U32(long v) => tiff.AddRange(little ? [(byte)v, (byte)(v >> 8), (byte)(v >> 16), (byte)(v >> 24)] : [(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
        tiff.AddRange(random.Next(10) == 0 ? "XX"u8.ToArray() : little ? "II"u8.ToArray() : "MM"u8.ToArray());
        U16(random.Next(10) == 0 ? 43 : 42);
        long[] offsets = [8, 8, 8, 0, 7, 9, 0xFFFFFFFF, 0x7FFFFFFF, 40, 1000];
        long ifd = offsets[random.Next(offsets.Length)];
        U32(ifd);
        int[] counts = [0, 1, 1, 2, 3, 0xFFFF, 5000];
        int entries = counts[random.Next(counts.Length)];
        U16(entries);
        int written = Math.Min(entries, 3);
        int[] values = [0, 1, 3, 6, 8, 9, 100, 0xFFFF];
        int value = values[random.Next(values.Length)];
        int type = random.Next(4) == 0 ? random.Next(1, 13) : 3;
        long count = random.Next(4) == 0 ? random.Next(0, 5) : 1;
        for (int e = 0; e < written; e++)
        {
            U16(e == written - 1 ? 0x0112 : 0x010F + e);
            U16(e == written - 1 ? type : 2);
            U32(e == written - 1 ? count : random.Next(3) == 0 ? 0x7FFFFFFF : 4);
            if (e == written - 1) { U16(value); U16(0); }
            else U32(random.Next(2) == 0 ? 8 : 0xFFFFFFF0);
        }
        U32(random.Next(3) == 0 ? 8 : 0); // next IFD: IFD0 again (a loop) or none
        int keep = random.Next(6) == 0 ? random.Next(tiff.Count + 1) : tiff.Count;
        what = $"{(little ? "II" : "MM")} IFD at {ifd}, {entries} entries, orientation type {type} count {count} value {value}, {keep} of {tiff.Count} bytes";
        return [.. "Exif\0\0"u8, .. tiff.Take(keep)];
    }
}
