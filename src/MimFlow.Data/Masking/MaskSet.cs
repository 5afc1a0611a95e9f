using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Previews;

namespace MimFlow.Data.Masking;

public enum MaskKind { Blockwise, Random, Ibot }

/// <summary>What <c>mimflow masks</c> draws: N masks of a patch grid, with the generator's own defaults (BEiT's: 75 of 14×14 in blocks of at least 16).</summary>
public sealed record MaskSetRequest(int Count, string Output)
{
    /// <summary>Grid sides up to 1024 patches (a 16,384-pixel image at patch 16): far above any ViT's grid.</summary>
    public const int MaxGridSide = 1024;

    /// <summary>The .npy is built in memory: count × H × W bytes at most (256 MiB).</summary>
    public const long MaxBytes = 256L << 20;

    public int Height { get; init; } = 14;
    public int Width { get; init; } = 14;
    public MaskKind Kind { get; init; } = MaskKind.Blockwise;

    /// <summary>Patches to mask (blockwise, random).</summary>
    public int MaskedPatches { get; init; } = 75;

    /// <summary>Blockwise: the smallest block.</summary>
    public int MinBlockPatches { get; init; } = 16;
    public ulong Seed { get; init; }

    /// <summary>A preview PNG of the first 64 masks, or null.</summary>
    public string? Preview { get; init; }

    /// <summary>Bounds that depend on each other, checked before anything is drawn or written; each names its option.</summary>
    public void Validate()
    {
        if (Count < 1) throw new ArgumentException($"--count must be at least 1 (got {Count})");
        if (Height is < 1 or > MaxGridSide || Width is < 1 or > MaxGridSide) throw new ArgumentException($"--grid sides must be in 1…{MaxGridSide} (got {Height}x{Width})");
        long cells = (long)Height * Width;
        if (MaskedPatches < 0 || MaskedPatches > cells) throw new ArgumentException($"--num-masked must be in 0…{cells} for a {Height}x{Width} grid (got {MaskedPatches})");
        if (Kind == MaskKind.Blockwise && (MinBlockPatches < 1 || MinBlockPatches > cells))
            throw new ArgumentException($"--min-block must be in 1…{cells} for a {Height}x{Width} grid (got {MinBlockPatches})");
        if (Count * cells > MaxBytes)
            throw new ArgumentException($"--count {Count:N0} masks of a {Height}x{Width} grid need {Count * cells:N0} bytes, above the limit of {MaxBytes:N0}: lower --count");
    }
}

public sealed record MaskSetResult(int Count, int Height, int Width, double MeanMasked, double MeanBlocks, string Output, string? Preview);

/// <summary>Masks drawn from their seeded streams (mask i from (seed, "mask", i)) into a NumPy .npy (uint8 [N,H,W], 1 = masked).</summary>
public static class MaskSet
{
    public static MaskSetResult Write(MaskSetRequest request)
    {
        request.Validate();
        IMaskGenerator generator = request.Kind switch
        {
            MaskKind.Random => new RandomMaskGenerator(request.Height, request.Width, request.MaskedPatches),
            MaskKind.Ibot => new IbotMaskGenerator(request.Height, request.Width),
            _ => new BlockwiseMaskGenerator(request.Height, request.Width, request.MaskedPatches, request.MinBlockPatches),
        };
        int cells = request.Height * request.Width;
        var masks = new List<PatchMask>(request.Count);
        byte[] data = new byte[request.Count * cells];
        for (int i = 0; i < request.Count; i++)
        {
            var random = StableRandom.For(request.Seed, "mask", (ulong)i);
            var mask = generator.Next(ref random);
            mask.CopyTo(data.AsSpan(i * cells, cells));
            masks.Add(mask);
        }
        AtomicFile.Write(request.Output, temporary =>
        {
            using var stream = File.Create(temporary);
            NpyWriter.WriteUInt8(stream, data, request.Count, request.Height, request.Width);
        });
        if (request.Preview is { } preview) MaskPreview.WriteMaskGrid(masks, preview);
        return new MaskSetResult(request.Count, request.Height, request.Width, masks.Average(m => m.MaskedCount), masks.Average(m => m.Blocks), request.Output, request.Preview);
    }
}
