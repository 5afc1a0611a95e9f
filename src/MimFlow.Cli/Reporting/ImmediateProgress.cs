namespace MimFlow.Cli.Reporting;

/// <summary>
/// Handles each report on the thread that makes it, before the work goes on. <see cref="Progress{T}"/> posts
/// reports to the thread pool, where they can overtake each other and outlive the work: a scraped gauge or a log
/// line could then show a later step than the one just reported, or a report could land after the closing line.
/// The handlers here are cheap (a gauge set, at most one line per interval), so running them inline costs nothing.
/// </summary>
internal sealed class ImmediateProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
