using System.Text;
using MimFlow.Core.Randomness;
using MimFlow.Data.Masking;

namespace MimFlow.Tests.Data;

public sealed class MaskingTests
{
    private static List<PatchMask> Draw(IMaskGenerator generator, int count, ulong seed = 1) =>
        Enumerable.Range(0, count).Select(i =>
        {
            var random = StableRandom.For(seed, "mask", (ulong)i);
            return generator.Next(ref random);
        }).ToList();

    [Fact]
    public void Blockwise_masks_never_exceed_the_target_and_mostly_reach_it_in_a_few_blocks()
    {
        var masks = Draw(new BlockwiseMaskGenerator(14, 14, 75), 500);
        Assert.All(masks, m => Assert.InRange(m.MaskedCount, 16, 75));
        Assert.All(masks, m => Assert.Equal(m.MaskedCount, m.Cells.ToArray().Count(c => c)));
        double mean = masks.Average(m => m.MaskedCount);
        Assert.InRange(mean, 72, 75);
        Assert.True(masks.Count(m => m.MaskedCount == 75) > 250, "most masks reach exactly 75 patches");
        Assert.InRange(masks.Average(m => m.Blocks), 2.5, 6);
    }

    [Fact]
    public void Blockwise_masks_are_contiguous_blocks_not_scattered_patches()
    {
        // A random 75-patch mask has about 75·(1 − 75/196)·4 ≈ 185 masked–unmasked edges; blocks have far fewer.
        static int Edges(PatchMask m)
        {
            int edges = 0;
            for (int r = 0; r < m.Height; r++)
                for (int c = 0; c < m.Width; c++)
                {
                    if (c + 1 < m.Width && m[r, c] != m[r, c + 1]) edges++;
                    if (r + 1 < m.Height && m[r, c] != m[r + 1, c]) edges++;
                }
            return edges;
        }
        double blockwise = Draw(new BlockwiseMaskGenerator(14, 14, 75), 200).Average(Edges);
        double random = Draw(new RandomMaskGenerator(14, 14, 75), 200).Average(Edges);
        Assert.True(blockwise < random / 2, $"blockwise {blockwise:F0} edges vs random {random:F0}");
    }

    [Fact]
    public void Blockwise_stops_when_no_block_fits()
    {
        var mask = Draw(new BlockwiseMaskGenerator(3, 3, 9), 1)[0];
        Assert.InRange(mask.MaskedCount, 0, 9);
    }

    [Fact]
    public void Same_seed_same_masks_other_seed_other_masks()
    {
        var generator = new BlockwiseMaskGenerator(14, 14, 75);
        var a = Draw(generator, 20, seed: 5).Select(m => m.Cells.ToArray());
        var b = Draw(generator, 20, seed: 5).Select(m => m.Cells.ToArray());
        var c = Draw(generator, 20, seed: 6).Select(m => m.Cells.ToArray());
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Random_masks_have_exactly_the_count_and_cover_positions_evenly()
    {
        var masks = Draw(new RandomMaskGenerator(14, 14, 75), 2000);
        Assert.All(masks, m => Assert.Equal(75, m.MaskedCount));
        var frequency = new double[196];
        foreach (var mask in masks)
            for (int i = 0; i < 196; i++) if (mask.Cells[i]) frequency[i]++;
        Assert.All(frequency, f => Assert.InRange(f / masks.Count, 75.0 / 196 - 0.06, 75.0 / 196 + 0.06));
    }

    [Fact]
    public void Ibot_leaves_about_half_the_images_unmasked_and_masks_the_rest_between_10_and_50_percent()
    {
        var masks = Draw(new IbotMaskGenerator(14, 14), 2000);
        double unmasked = masks.Count(m => m.MaskedCount == 0) / (double)masks.Count;
        Assert.InRange(unmasked, 0.45, 0.55);
        var masked = masks.Where(m => m.MaskedCount > 0).Select(m => m.MaskedCount / 196.0).ToList();
        Assert.All(masked, r => Assert.InRange(r, 0.0, 0.5));
        Assert.InRange(masked.Average(), 0.22, 0.32);
    }

    [Fact]
    public void Npy_files_have_the_numpy_1_0_header_and_c_ordered_data()
    {
        byte[] data = Enumerable.Range(0, 2 * 3 * 4).Select(i => (byte)(i % 2)).ToArray();
        using var stream = new MemoryStream();
        NpyWriter.WriteUInt8(stream, data, 2, 3, 4);
        byte[] file = stream.ToArray();
        Assert.Equal(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 }, file[..8]);
        int headerLength = BitConverter.ToUInt16(file, 8);
        Assert.Equal(0, (10 + headerLength) % 64);
        string header = Encoding.ASCII.GetString(file, 10, headerLength);
        Assert.Equal("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }", header.TrimEnd());
        Assert.EndsWith("\n", header);
        Assert.Equal(data, file[(10 + headerLength)..]);
        Assert.Throws<ArgumentException>(() => NpyWriter.WriteUInt8(new MemoryStream(), data, 5, 5));
    }
}
