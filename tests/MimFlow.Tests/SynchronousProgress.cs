namespace MimFlow.Tests;

/// <summary>
/// Reports on the reporting thread, at once (<see cref="Progress{T}"/> posts to the thread pool, so a test that
/// cancels a run from a report would stop it at an unknown later point).
/// </summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
