using NetVips;

namespace MimFlow.Datasets.Checks;

/// <param name="Path">The file that failed.</param>
/// <param name="Reason">Why, in words.</param>
public sealed record DecodeFailure(string Path, string Reason);

/// <param name="Images">Image files (JPEG) that decoded fully.</param>
/// <param name="LabelMaps">Label maps (PNG) that decoded as one 8-bit band with values in range.</param>
/// <param name="MaxLabel">The largest label value seen in any label map (0 when there were none).</param>
public sealed record DecodeCheckResult(int Images, int LabelMaps, int MaxLabel, IReadOnlyList<DecodeFailure> Failures, TimeSpan Elapsed);

/// <summary>
/// Decodes every image and label map below a folder to the last pixel (libvips fails on truncated data), and
/// checks that label maps are single-band 8-bit with values no larger than <c>maxLabel</c>.
/// </summary>
public static class DecodeCheck
{
    public static DecodeCheckResult Run(string root, int maxLabel = Layouts.Ade20kLayout.ClassCount, CancellationToken cancellationToken = default)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        int images = 0, labelMaps = 0, highest = 0;
        var failures = new List<DecodeFailure>();
        foreach (string path in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            cancellationToken.ThrowIfCancellationRequested();
            string extension = Path.GetExtension(path).ToLowerInvariant();
            if (extension is not (".jpg" or ".jpeg" or ".png")) continue;
            try
            {
                using var image = Image.NewFromFile(path, access: Enums.Access.Sequential, failOn: Enums.FailOn.Warning);
                if (extension == ".png")
                {
                    if (image.Bands != 1 || image.Format != Enums.BandFormat.Uchar)
                    {
                        failures.Add(new DecodeFailure(path, $"label map has {image.Bands} band(s) of {image.Format}, expected 1 band of uchar"));
                        continue;
                    }
                    int max = (int)image.Max();
                    if (max > maxLabel)
                    {
                        failures.Add(new DecodeFailure(path, $"label {max} is above the largest class {maxLabel}"));
                        continue;
                    }
                    highest = Math.Max(highest, max);
                    labelMaps++;
                }
                else
                {
                    _ = image.Avg();
                    images++;
                }
            }
            catch (VipsException e)
            {
                failures.Add(new DecodeFailure(path, e.Message.Split('\n', 2)[0].Trim()));
            }
        }
        return new DecodeCheckResult(images, labelMaps, highest, failures, watch.Elapsed);
    }
}
