using MimFlow.Data.Masking;
using NetVips;

namespace MimFlow.Data.Previews;

/// <summary>PNG pictures of masks and masked batches, for people to look at.</summary>
public static class MaskPreview
{
    /// <summary>A grid of masks (white = masked), <paramref name="cell"/> pixels per patch, at most <paramref name="maxMasks"/>.</summary>
    public static void WriteMaskGrid(IReadOnlyList<PatchMask> masks, string path, int cell = 8, int columns = 8, int maxMasks = 64)
    {
        var shown = masks.Take(maxMasks).ToList();
        if (shown.Count == 0) throw new ArgumentException("no masks to draw");
        var tiles = shown.Select(mask =>
        {
            byte[] pixels = new byte[mask.Height * cell * mask.Width * cell];
            for (int r = 0; r < mask.Height * cell; r++)
                for (int c = 0; c < mask.Width * cell; c++)
                {
                    bool border = r % cell == 0 || c % cell == 0;
                    pixels[r * mask.Width * cell + c] = mask[r / cell, c / cell] ? (byte)(border ? 200 : 255) : (byte)(border ? 60 : 30);
                }
            return Image.NewFromMemory(pixels, mask.Width * cell, mask.Height * cell, 1, Enums.BandFormat.Uchar);
        }).ToArray();
        WriteGrid(tiles, path, columns);
    }

    /// <summary>Planar RGB images with their masked patches dimmed and tinted, as a model's input would lack them.</summary>
    /// <param name="images">Each image with its mask over a square patch grid (row-major, 1 = masked), or null.</param>
    public static void WriteMaskedImages(IReadOnlyList<(byte[] Planar, int Size, byte[]? Mask)> images, string path, int columns = 8)
    {
        var tiles = images.Select(item =>
        {
            int size = item.Size, plane = size * size;
            int grid = item.Mask is null ? 1 : (int)Math.Round(Math.Sqrt(item.Mask.Length));
            byte[] rgb = new byte[plane * 3];
            for (int i = 0; i < plane; i++)
            {
                int y = i / size, x = i % size;
                bool masked = item.Mask is { } m && m[y * grid / size * grid + x * grid / size] != 0;
                for (int c = 0; c < 3; c++)
                {
                    byte value = item.Planar[c * plane + i];
                    rgb[3 * i + c] = masked ? (byte)(value / 4 + (c == 2 ? 120 : 40)) : value;
                }
            }
            return Image.NewFromMemory(rgb, size, size, 3, Enums.BandFormat.Uchar);
        }).ToArray();
        WriteGrid(tiles, path, columns);
    }

    /// <summary>Each planar RGB view next to its label map drawn in false colour over it (255 = ignored, shown black).</summary>
    public static void WriteSegmentation(IReadOnlyList<(byte[] Planar, int Size, byte[] Labels)> samples, string path)
    {
        var tiles = samples.SelectMany(item =>
        {
            int plane = item.Size * item.Size;
            byte[] rgb = new byte[plane * 3], overlay = new byte[plane * 3];
            for (int i = 0; i < plane; i++)
            {
                byte label = item.Labels[i];
                for (int c = 0; c < 3; c++)
                {
                    byte value = item.Planar[c * plane + i];
                    rgb[3 * i + c] = value;
                    int colour = label == 255 ? 0 : (label * (c == 0 ? 67 : c == 1 ? 137 : 211) + 40) % 256;
                    overlay[3 * i + c] = label == 255 ? (byte)0 : (byte)((value + colour) / 2);
                }
            }
            return new[]
            {
                Image.NewFromMemory(rgb, item.Size, item.Size, 3, Enums.BandFormat.Uchar),
                Image.NewFromMemory(overlay, item.Size, item.Size, 3, Enums.BandFormat.Uchar),
            };
        }).ToArray();
        WriteGrid(tiles, path, 4);
    }

    private static void WriteGrid(Image[] tiles, string path, int columns)
    {
        try
        {
            using var grid = Image.Arrayjoin(tiles, across: Math.Min(columns, tiles.Length), shim: 4);
            Core.IO.AtomicFile.Write(path, temporary => grid.Pngsave(temporary, keep: Enums.ForeignKeep.None));
        }
        finally
        {
            foreach (var tile in tiles) tile.Dispose();
        }
    }
}
