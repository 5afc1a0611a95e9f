using System.CommandLine;
using MimFlow.Core.IO;
using MimFlow.Core.Randomness;
using MimFlow.Data.Masking;
using MimFlow.Data.Previews;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow masks</c>: draw masks to a NumPy file (and a preview PNG).</summary>
internal static class MasksCommand
{
    /// <summary>Grid sides up to 1024 patches (a 16,384-pixel image at patch 16): far above any ViT's grid.</summary>
    private const int MaxGridSide = 1024;

    /// <summary>The .npy is built in memory: count × H × W bytes at most (256 MiB).</summary>
    private const long MaxMaskBytes = 256L << 20;

    public static Command Create(CliContext context)
    {
        var count = new Option<int>("--count") { Description = "Number of masks", Required = true }.InRange(1, 10_000_000);
        var grid = new Option<string>("--grid") { Description = $"Patch grid HxW, e.g. 14x14 (sides 1…{MaxGridSide})", DefaultValueFactory = _ => "14x14" }
            .Check(text => TryParseGrid(text) is null ? $"must look like 14x14 with sides in 1…{MaxGridSide} (got '{text}')" : null);
        var masked = new Option<int>("--num-masked") { Description = "Patches to mask (blockwise, random)", DefaultValueFactory = _ => 75 }.InRange(0, MaxGridSide * MaxGridSide);
        var kind = new Option<string>("--kind") { Description = "blockwise (BEiT), random, or ibot", DefaultValueFactory = _ => "blockwise" };
        kind.AcceptOnlyFromAmong("blockwise", "random", "ibot");
        var minBlock = new Option<int>("--min-block") { Description = "Blockwise: minimum patches per block", DefaultValueFactory = _ => 16 }.InRange(1, MaxGridSide * MaxGridSide);
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output .npy (uint8 [N,H,W], 1 = masked)", Required = true };
        var png = new Option<string?>("--png") { Description = "Also write a preview grid PNG of the first 64 masks" };
        var command = new Command("masks", "Draw patch masks (BEiT blockwise, random, iBOT) into a NumPy .npy file");
        foreach (var option in new Option[] { count, grid, masked, kind, minBlock, seed, output, png }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            var (height, width) = TryParseGrid(parsed.GetRequiredValue(grid)) ?? throw new UsageException($"--grid must look like 14x14 (got '{parsed.GetValue(grid)}')");
            int n = parsed.GetValue(count);
            int target = parsed.GetValue(masked);
            // Bounds that depend on the grid, checked before anything is drawn or written.
            long cells = (long)height * width;
            if (target > cells) throw new UsageException($"--num-masked must be in 0…{cells} for a {height}x{width} grid (got {target})");
            if (parsed.GetValue(kind) == "blockwise" && parsed.GetValue(minBlock) > cells) throw new UsageException($"--min-block must be in 1…{cells} for a {height}x{width} grid (got {parsed.GetValue(minBlock)})");
            if (n * cells > MaxMaskBytes)
                throw new UsageException($"--count {n:N0} masks of a {height}x{width} grid need {n * cells:N0} bytes, above the limit of {MaxMaskBytes:N0}: lower --count");
            IMaskGenerator generator = parsed.GetValue(kind) switch
            {
                "random" => new RandomMaskGenerator(height, width, target),
                "ibot" => new IbotMaskGenerator(height, width),
                _ => new BlockwiseMaskGenerator(height, width, target, parsed.GetValue(minBlock)),
            };
            ulong seedValue = parsed.GetValue(seed);
            var masks = new List<PatchMask>(n);
            byte[] data = new byte[n * height * width];
            for (int i = 0; i < n; i++)
            {
                var random = StableRandom.For(seedValue, "mask", (ulong)i);
                var mask = generator.Next(ref random);
                mask.CopyTo(data.AsSpan(i * height * width, height * width));
                masks.Add(mask);
            }
            string path = parsed.GetRequiredValue(output);
            AtomicFile.Write(path, temporary =>
            {
                using var stream = File.Create(temporary);
                NpyWriter.WriteUInt8(stream, data, n, height, width);
            });
            if (parsed.GetValue(png) is { } preview) MaskPreview.WriteMaskGrid(masks, preview);
            context.Console.MarkupLineInterpolated(
                $"wrote {n} masks {height}x{width} to {path}: mean masked {masks.Average(m => m.MaskedCount):F2} patches, mean blocks {masks.Average(m => m.Blocks):F2}{(parsed.GetValue(png) is { } p ? $"; preview {p}" : "")}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static (int Height, int Width)? TryParseGrid(string text)
    {
        string[] parts = text.ToLowerInvariant().Split('x');
        return parts.Length == 2 && int.TryParse(parts[0], out int h) && int.TryParse(parts[1], out int w) && h is > 0 and <= MaxGridSide && w is > 0 and <= MaxGridSide
            ? (h, w)
            : null;
    }
}
