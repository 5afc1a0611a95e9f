namespace MimFlow.Core.Diagnostics;

/// <summary>
/// This process's peak resident memory (Linux <c>VmHWM</c>), resettable so each benchmark stage reports its own peak
/// rather than the largest of every stage before it.
/// </summary>
public static class ProcessMemory
{
    /// <summary>Resets the peak to the current resident size; false where the kernel does not allow it (the peak then spans earlier work).</summary>
    public static bool ResetPeak()
    {
        try
        {
            // Open without truncation: /proc files refuse O_TRUNC.
            using var file = new FileStream("/proc/self/clear_refs", FileMode.Open, FileAccess.Write);
            file.Write("5"u8);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>Peak resident bytes since the start or the last reset; the working set where /proc is absent.</summary>
    public static long PeakBytes()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
            foreach (string line in File.ReadLines(status))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal)
                    && long.TryParse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture, out long kilobytes))
                    return kilobytes * 1024;
        return Environment.WorkingSet;
    }
}
