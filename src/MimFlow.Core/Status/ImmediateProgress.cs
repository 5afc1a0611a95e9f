namespace MimFlow.Core.Status;

/// <summary>
/// Handles each report on the thread that makes it, before the work goes on. <see cref="Progress{T}"/> posts
/// reports to the thread pool, where they can overtake each other and outlive the work: a scraped gauge or a log
/// line could then show a later step than the one just reported, a report could land after the closing line, and a
/// test that cancels a run from a report would stop it at an unknown later point. Handlers must be cheap (the CLI's
/// set a gauge and write at most one line per interval).
/// </summary>
public sealed class ImmediateProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
