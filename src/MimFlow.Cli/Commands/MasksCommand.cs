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
    public static Command Create(CliContext context)
    {
        var count = new Option<int>("--count") { Description = "Number of masks", Required = true };
        var grid = new Option<string>("--grid") { Description = "Patch grid HxW, e.g. 14x14", DefaultValueFactory = _ => "14x14" };
        var masked = new Option<int>("--num-masked") { Description = "Patches to mask (blockwise, random)", DefaultValueFactory = _ => 75 };
        var kind = new Option<string>("--kind") { Description = "blockwise (BEiT), random, or ibot", DefaultValueFactory = _ => "blockwise" };
        kind.AcceptOnlyFromAmong("blockwise", "random", "ibot");
        var minBlock = new Option<int>("--min-block") { Description = "Blockwise: minimum patches per block", DefaultValueFactory = _ => 16 };
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output .npy (uint8 [N,H,W], 1 = masked)", Required = true };
        var png = new Option<string?>("--png") { Description = "Also write a preview grid PNG of the first 64 masks" };
        var command = new Command("masks", "Draw patch masks (BEiT blockwise, random, iBOT) into a NumPy .npy file");
        foreach (var option in new Option[] { count, grid, masked, kind, minBlock, seed, output, png }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            var (height, width) = ParseGrid(parsed.GetRequiredValue(grid));
            int n = parsed.GetValue(count);
            if (n < 1) throw new ArgumentException($"--count must be at least 1 (got {n}).");
            int target = parsed.GetValue(masked);
            if (target < 0 || target > height * width) throw new ArgumentException($"--num-masked must be in 0..{height * width} for a {height}x{width} grid (got {target}).");
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

    private static (int Height, int Width) ParseGrid(string text)
    {
        string[] parts = text.ToLowerInvariant().Split('x');
        if (parts.Length == 2 && int.TryParse(parts[0], out int h) && int.TryParse(parts[1], out int w) && h > 0 && w > 0) return (h, w);
        throw new ArgumentException($"--grid must look like 14x14 (got '{text}').");
    }
}
