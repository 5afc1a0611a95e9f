namespace MimFlow.Data.Decoding;

/// <summary>
/// libvips settings for decoding many small images in parallel. They are process-wide in libvips itself, so this is
/// the one place that sets them: one thread per image (parallelism comes from the Dataflow graph, and libvips'
/// own thread hand-offs cost more than they save on 224-pixel outputs) and no operation cache (every input buffer
/// is new, so caching only holds memory).
/// </summary>
public static class LibvipsSettings
{
    /// <summary>The loaded libvips, as "major.minor.patch".</summary>
    public static string Version => $"{NetVips.NetVips.Version(0)}.{NetVips.NetVips.Version(1)}.{NetVips.NetVips.Version(2)}";

    public static void ForGraphParallelism()
    {
        if (NetVips.NetVips.Concurrency != 1) NetVips.NetVips.Concurrency = 1;
        if (NetVips.Cache.Max != 0) NetVips.Cache.Max = 0;
    }
}
