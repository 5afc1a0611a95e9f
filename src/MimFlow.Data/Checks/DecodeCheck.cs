using MimFlow.Core.IO;
using MimFlow.Data.Decoding;
using MimFlow.Data.Sources;
using NetVips;

namespace MimFlow.Data.Checks;

/// <param name="Path">The file that failed.</param>
/// <param name="Reason">Why, in words.</param>
public sealed record DecodeFailure(string Path, string Reason);

/// <param name="Images">Image files (JPEG) that decoded fully.</param>
/// <param name="LabelMaps">Label maps (PNG) that decoded as one 8-bit band with values in range.</param>
/// <param name="MaxLabel">The largest label value seen in any label map (0 when there were none).</param>
public sealed record DecodeCheckResult(int Images, int LabelMaps, int MaxLabel, IReadOnlyList<DecodeFailure> Failures, TimeSpan Elapsed);

/// <summary>
/// Decodes every image and label map below a folder (walked as the folder layouts list it, <see cref="FolderWalk"/>) to the last pixel (libvips fails on truncated data), and
/// checks that label maps are single-band 8-bit with values no larger than <c>maxLabel</c>. The checks of one encoded
/// image or label map are public, for datasets stored in archives.
/// </summary>
public static class DecodeCheck
{
    public static DecodeCheckResult Run(string root, int maxLabel = Sources.Layouts.Ade20kLayout.ClassCount, CancellationToken cancellationToken = default)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        int images = 0, labelMaps = 0, highest = 0;
        var failures = new List<DecodeFailure>();
        // The listing's walk: folder links are not followed, undecodable names are failures of their own.
        var entries = FolderWalk.FilesBelow(root, "", name => Path.GetExtension(name).ToLowerInvariant() is ".jpg" or ".jpeg" or ".png")
            .Select(e => (Path: Path.Combine(root, e.RelativePath), e.Defect))
            .OrderBy(e => e.Path, StringComparer.Ordinal);
        foreach (var (path, defect) in entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (defect is not null)
            {
                failures.Add(new DecodeFailure(path, defect));
                continue;
            }
            bool labelMap = Path.GetExtension(path).Equals(".png", StringComparison.OrdinalIgnoreCase);
            string? failure;
            try
            {
                // Only a regular file is opened (a FIFO would block, a device never end), and never past the loader's limit.
                byte[] encoded = RegularFile.ReadAllBytes(path, DecodeLimits.Default.MaxFileBytes);
                failure = labelMap ? CheckLabelMap(encoded, maxLabel, ref highest) : CheckImage(encoded);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failure = e is NotARegularFileException notRegular ? notRegular.Reason : e.Message;
            }
            if (failure is not null) failures.Add(new DecodeFailure(path, failure));
            else if (labelMap) labelMaps++;
            else images++;
        }
        return new DecodeCheckResult(images, labelMaps, highest, failures, watch.Elapsed);
    }

    /// <summary>Decodes an encoded image to its last pixel; null when it is whole, else why not.</summary>
    public static string? CheckImage(byte[] encoded)
    {
        try
        {
            using var image = Image.NewFromBuffer(encoded, access: Enums.Access.Sequential, failOn: Enums.FailOn.Warning);
            return CheckImage(image);
        }
        catch (VipsException e)
        {
            return Reason(e);
        }
    }

    /// <summary>Decodes an encoded label map and checks it (one 8-bit band, values ≤ <paramref name="maxLabel"/>); null when
    /// good (<paramref name="highest"/> raised to its largest value), else why not.</summary>
    public static string? CheckLabelMap(byte[] encoded, int maxLabel, ref int highest)
    {
        try
        {
            using var image = Image.NewFromBuffer(encoded, access: Enums.Access.Sequential, failOn: Enums.FailOn.Warning);
            return CheckLabelMap(image, maxLabel, ref highest);
        }
        catch (VipsException e)
        {
            return Reason(e);
        }
    }

    private static string? CheckImage(Image image)
    {
        _ = image.Avg();
        return null;
    }

    private static string? CheckLabelMap(Image image, int maxLabel, ref int highest)
    {
        if (image.Bands != 1 || image.Format != Enums.BandFormat.Uchar)
            return $"label map has {image.Bands} band(s) of {image.Format}, expected 1 band of uchar";
        int max = (int)image.Max();
        if (max > maxLabel) return $"label {max} is above the largest class {maxLabel}";
        highest = Math.Max(highest, max);
        return null;
    }

    private static string Reason(VipsException e) => e.Message.Split('\n', 2)[0].Trim();
}
