using MimFlow.Core.IO;
using MimFlow.Data.Augment;
using NetVips;
using Parquet;

namespace MimFlow.Shards;

/// <summary>Compressed bytes of one column over the whole set, and per row.</summary>
public sealed record ColumnSize(string Column, long Bytes, double BytesPerRow);

/// <summary>How much of the codebook the set uses: codes seen at least once, entropy and perplexity of their frequencies.</summary>
public sealed record CodebookUsage(int CodebookSize, int Used, double Entropy, long[] Counts)
{
    public double UsedShare => (double)Used / CodebookSize;

    /// <summary>2^entropy: the number of equally likely codes with the same entropy.</summary>
    public double Perplexity => Math.Pow(2, Entropy);
}

public sealed record ShardInspection(ShardManifest Manifest, IReadOnlyList<ColumnSize> Columns, CodebookUsage? Codebook, IReadOnlyList<string> Pictures);

/// <summary>
/// <c>mimflow shards inspect</c>: the set's size per column (from the Parquet footers), codebook usage over every
/// code with a histogram PNG (<c>codebook-usage.png</c>), and a PNG of the first samples (<c>samples.png</c>): the
/// stored image with the view's crop drawn on it, next to its codes in false colour on the tokenizer's grid.
/// </summary>
public static class ShardInspector
{
    /// <summary>Rows drawn in samples.png unless asked otherwise.</summary>
    public const int DefaultSamples = 8;

    /// <summary>The folder the pictures go to unless asked otherwise: <c>DIR/inspect</c>.</summary>
    public static string DefaultPictures(string directory) => Path.Combine(directory, "inspect");

    public static async Task<ShardInspection> InspectAsync(string directory, string? pictures = null, int samples = DefaultSamples, CancellationToken cancellationToken = default)
    {
        pictures ??= DefaultPictures(directory);
        var manifest = ShardManifest.Read(directory);
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var shard in manifest.Shards)
        {
            string path = Path.Combine(directory, shard.Name);
            await using var stream = File.OpenRead(path);
            await using var reader = await ShardReader.OpenAsync(stream, path, cancellationToken);
            foreach (var group in reader.Metadata?.RowGroups ?? [])
                foreach (var chunk in group.Columns ?? [])
                {
                    if (chunk.MetaData?.PathInSchema is not [string column, ..] || chunk.MetaData.TotalCompressedSize < 0)
                        throw new InvalidDataException($"{path}: not a readable shard (a column chunk of the footer names no column or a negative size)");
                    sizes[column] = sizes.GetValueOrDefault(column) + chunk.MetaData.TotalCompressedSize;
                }
        }
        var columns = sizes.Select(p => new ColumnSize(p.Key, p.Value, manifest.Rows == 0 ? 0 : (double)p.Value / manifest.Rows)).ToList();

        CodebookUsage? usage = null;
        var shown = new List<(ShardRow Row, string Where)>();
        long[]? counts = manifest.Columns.Codes ? new long[manifest.CodebookSize] : null;
        foreach (var shard in manifest.Shards)
        {
            string path = Path.Combine(directory, shard.Name);
            long index = 0;
            await foreach (var row in ShardReader.ReadAsync(path, cancellationToken))
            {
                if (counts is not null)
                {
                    if (row.Codes is not { } rowCodes) throw new InvalidDataException($"{path}: row {index} has no codes");
                    if (rowCodes.Length != manifest.CodeLength)
                        throw new InvalidDataException($"{path}: row {index} ({row.Path}) holds {rowCodes.Length} codes, the manifest's grid has {manifest.CodeLength}");
                }
                if (counts is not null)
                    foreach (short code in row.Codes!)
                    {
                        if (code < 0 || code >= counts.Length)
                            throw new InvalidDataException($"{path}: row {index} ({row.Path}) holds code {code}, outside the manifest's codebook of {counts.Length}");
                        counts[code]++;
                    }
                if (shown.Count < samples && row.Image is not null) shown.Add((row, $"{path}: row {index} ({row.Path})"));
                index++;
            }
        }
        if (counts is not null)
        {
            double total = counts.Sum();
            double entropy = total == 0 ? 0 : -counts.Where(c => c > 0).Sum(c => c / total * Math.Log2(c / total));
            usage = new CodebookUsage(manifest.CodebookSize, counts.Count(c => c > 0), entropy, counts);
        }

        var written = new List<string>();
        if (pictures is not null)
        {
            Directory.CreateDirectory(pictures);
            if (usage is not null)
            {
                string path = Path.Combine(pictures, "codebook-usage.png");
                WriteUsagePlot(usage, path);
                written.Add(path);
            }
            if (shown.Count > 0)
            {
                string path = Path.Combine(pictures, "samples.png");
                WriteSamples(shown, manifest.CodeLength, path);
                written.Add(path);
            }
        }
        return new ShardInspection(manifest, columns, usage, written);
    }

    /// <summary>Code frequencies sorted from most to least used (a flat curve is a well-used codebook).</summary>
    private static void WriteUsagePlot(CodebookUsage usage, string path)
    {
        double[] sorted = usage.Counts.Select(c => (double)c).OrderDescending().ToArray();
        var plot = new ScottPlot.Plot();
        plot.Add.Scatter(Enumerable.Range(0, sorted.Length).Select(i => (double)i).ToArray(), sorted);
        plot.Title($"codebook usage: {usage.Used} of {usage.CodebookSize} codes used ({usage.UsedShare:P1}), perplexity {usage.Perplexity:F0}");
        plot.XLabel("code rank (most used first)");
        plot.YLabel("occurrences");
        AtomicFile.Write(path, temporary => plot.SavePng(temporary, 900, 500));
    }

    private static void WriteSamples(IReadOnlyList<(ShardRow Row, string Where)> rows, int codeLength, string path)
    {
        const int height = 160;
        var tiles = new List<Image>();
        try
        {
            foreach (var (row, where) in rows)
                try
                {
                    AddTiles(row, codeLength, height, tiles);
                }
                catch (Exception e) when (e is VipsException or System.Text.Json.JsonException or InvalidDataException or NotSupportedException)
                {
                    // A stored image or augmentation that does not decode is the shard's damage: named, not a crash.
                    throw new InvalidDataException($"{where}: its stored image or augmentation cannot be drawn ({e.Message.Split('\n')[0]})", e);
                }
            using var sheet = Image.Arrayjoin(tiles.ToArray(), across: rows[0].Row.Codes is null ? 4 : 8, shim: 4, valign: Enums.Align.Centre);
            AtomicFile.Write(path, temporary => sheet.Pngsave(temporary, keep: Enums.ForeignKeep.None));
        }
        finally
        {
            foreach (var tile in tiles) tile.Dispose();
        }
    }

    private static void AddTiles(ShardRow row, int codeLength, int height, List<Image> tiles)
    {
        if (row.SourceWidth < 1 || row.SourceHeight < 1) throw new InvalidDataException($"source size {row.SourceWidth}×{row.SourceHeight}");
        using var stored = Image.NewFromBuffer(row.Image!);
        double scale = (double)stored.Width / row.SourceWidth;
        var crop = AugmentParams.FromJson(row.Augment).Views?.FirstOrDefault()?.Crop ?? throw new InvalidDataException("no view");
        if (!(double.IsFinite(crop.X * scale) && double.IsFinite(crop.Y * scale) && double.IsFinite(crop.Width * scale) && double.IsFinite(crop.Height * scale)))
            throw new InvalidDataException("a crop that is not finite");
        using var framed = stored.Mutate(image =>
        {
            int x = (int)(crop.X * scale), y = (int)(crop.Y * scale), w = Math.Max(1, (int)(crop.Width * scale)), h = Math.Max(1, (int)(crop.Height * scale));
            image.DrawRect([255, 40, 40], x, y, w, h);
            if (w > 2 && h > 2) image.DrawRect([255, 40, 40], x + 1, y + 1, w - 2, h - 2);
        });
        var photo = framed.Resize((double)height / framed.Height);
        tiles.Add(photo);
        if (row.Codes is { } codes && codeLength > 0)
        {
            int grid = (int)Math.Round(Math.Sqrt(codeLength));
            byte[] rgb = new byte[grid * grid * 3];
            for (int i = 0; i < Math.Min(grid * grid, codes.Length); i++)
            {
                uint hash = (uint)codes[i] * 2654435761u;
                rgb[3 * i] = (byte)(hash >> 24);
                rgb[3 * i + 1] = (byte)(hash >> 16);
                rgb[3 * i + 2] = (byte)(hash >> 8);
            }
            using var small = Image.NewFromMemory(rgb, grid, grid, 3, Enums.BandFormat.Uchar);
            tiles.Add(small.Resize((double)height / grid, kernel: Enums.Kernel.Nearest));
        }
    }
}
