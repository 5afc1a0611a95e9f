namespace MimFlow.Core.Diagnostics;

/// <summary>Facts about the machine that every report states next to its figures.</summary>
public sealed record HostFacts(
    string OperatingSystem,
    string DotnetVersion,
    int LogicalCores,
    long? TotalMemoryBytes,
    long? AvailableMemoryBytes)
{
    public static HostFacts Read()
    {
        var (total, available) = ReadMemInfo();
        return new HostFacts(
            System.Runtime.InteropServices.RuntimeInformation.OSDescription,
            Environment.Version.ToString(),
            Environment.ProcessorCount,
            total,
            available);
    }

    /// <summary>MemTotal and MemAvailable from /proc/meminfo (kB); null where the file is absent.</summary>
    private static (long? Total, long? Available) ReadMemInfo()
    {
        const string path = "/proc/meminfo";
        if (!File.Exists(path)) return (null, null);
        long? total = null, available = null;
        foreach (string line in File.ReadLines(path))
        {
            if (line.StartsWith("MemTotal:", StringComparison.Ordinal)) total = ParseKilobytes(line);
            else if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)) available = ParseKilobytes(line);
        }
        return (total, available);
    }

    private static long? ParseKilobytes(string line)
    {
        string[] parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 2 && long.TryParse(parts[1], out long kb) ? kb * 1024 : null;
    }
}
