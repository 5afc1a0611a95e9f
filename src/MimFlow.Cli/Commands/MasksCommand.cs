using System.CommandLine;
using MimFlow.Data.Masking;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow masks</c>: draw masks to a NumPy file (and a preview PNG).</summary>
internal static class MasksCommand
{
    public static Command Create(CliContext context)
    {
        const int maxSide = MaskSetRequest.MaxGridSide;
        var count = new Option<int>("--count") { Description = "Number of masks", Required = true }.InRange(1, 10_000_000);
        var grid = new Option<string?>("--grid") { Description = $"Patch grid HxW, e.g. 14x14 (the default; sides 1…{maxSide})" }
            .Check(text => TryParseGrid(text) is null ? $"must look like 14x14 with sides in 1…{maxSide} (got '{text}')" : null);
        var masked = new Option<int?>("--num-masked") { Description = "Patches to mask, blockwise and random (default 75)" }.InRange(0, maxSide * maxSide);
        var kind = FinetuneOptions.NullableChoice("--kind", "blockwise (BEiT; the default), random, or ibot", "blockwise", "random", "ibot");
        var minBlock = new Option<int?>("--min-block") { Description = "Blockwise: minimum patches per block (default 16)" }.InRange(1, maxSide * maxSide);
        var seed = new Option<ulong?>("--seed") { Description = "Seed (default 0)" };
        var output = new Option<string>("--out") { Description = "Output .npy (uint8 [N,H,W], 1 = masked)", Required = true };
        var png = new Option<string?>("--png") { Description = "Also write a preview grid PNG of the first 64 masks" };
        var command = new Command("masks", "Draw patch masks (BEiT blockwise, random, iBOT) into a NumPy .npy file");
        foreach (var option in new Option[] { count, grid, masked, kind, minBlock, seed, output, png }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            var request = new MaskSetRequest(parsed.GetValue(count), parsed.GetRequiredValue(output)) { Preview = parsed.GetValue(png) };
            if (parsed.GetValue(grid) is { } text)
            {
                var (height, width) = TryParseGrid(text) ?? throw new UsageException($"--grid must look like 14x14 (got '{text}')");
                request = request with { Height = height, Width = width };
            }
            request = request with
            {
                MaskedPatches = parsed.GetValue(masked) ?? request.MaskedPatches, MinBlockPatches = parsed.GetValue(minBlock) ?? request.MinBlockPatches,
                Seed = parsed.GetValue(seed) ?? request.Seed,
                Kind = parsed.GetValue(kind) switch { "random" => MaskKind.Random, "ibot" => MaskKind.Ibot, "blockwise" => MaskKind.Blockwise, _ => request.Kind },
            };
            try { request.Validate(); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            var result = MaskSet.Write(request);
            context.Console.MarkupLineInterpolated(
                $"wrote {result.Count} masks {result.Height}x{result.Width} to {result.Output}: mean masked {result.MeanMasked:F2} patches, mean blocks {result.MeanBlocks:F2}{(result.Preview is { } p ? $"; preview {p}" : "")}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static (int Height, int Width)? TryParseGrid(string text)
    {
        string[] parts = text.ToLowerInvariant().Split('x');
        return parts.Length == 2 && int.TryParse(parts[0], out int h) && int.TryParse(parts[1], out int w)
               && h is > 0 and <= MaskSetRequest.MaxGridSide && w is > 0 and <= MaskSetRequest.MaxGridSide
            ? (h, w)
            : null;
    }
}
