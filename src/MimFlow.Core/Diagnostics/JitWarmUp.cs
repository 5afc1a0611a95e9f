namespace MimFlow.Core.Diagnostics;

/// <summary>
/// Repeats a benchmark's warm-up pass until the JIT has settled. .NET compiles a hot method more than once (quick
/// code, then instrumented, then optimised, each after about 30 calls and a quiet spell, on a background thread that
/// competes for the cores), so one pass leaves compilation for the timed run: on two cores that cost a 128-image
/// tokenize run a tenth of its speed, a cost a real run over a dataset pays once in hours. A pass is repeated while it
/// (and the background compilation it started) compiled more than <see cref="QuietShare"/> of what the first pass did.
/// </summary>
/// <param name="CompiledMethods">Methods compiled so far in the process; the runtime's count unless a test supplies one.</param>
public sealed record JitWarmUp(Func<long>? CompiledMethods = null)
{
    public int MinPasses { get; init; } = 2;
    public int MaxPasses { get; init; } = 8;
    public double QuietShare { get; init; } = 0.1;

    /// <summary>How long the count must stay unchanged after a pass for the background compiler to count as idle.</summary>
    public TimeSpan Settle { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Longest wait for the background compiler after one pass.</summary>
    public TimeSpan MaxSettle { get; init; } = TimeSpan.FromSeconds(3);

    private long Count() => CompiledMethods?.Invoke() ?? System.Runtime.JitInfo.GetCompiledMethodCount();

    /// <summary>Runs <paramref name="pass"/> until the JIT is quiet; returns the passes run.</summary>
    public async Task<int> RunAsync(Func<CancellationToken, Task> pass, CancellationToken cancellationToken = default)
    {
        long first = 0;
        for (int passes = 1; ; passes++)
        {
            long before = Count();
            await pass(cancellationToken);
            await SettleAsync(cancellationToken);
            long compiled = Count() - before;
            if (passes == 1) first = compiled;
            if (passes >= MaxPasses || (passes >= MinPasses && compiled <= QuietShare * first)) return passes;
        }
    }

    private async Task SettleAsync(CancellationToken cancellationToken)
    {
        var poll = TimeSpan.FromTicks(Math.Max(1, Settle.Ticks / 5));
        var waited = TimeSpan.Zero;
        var unchanged = TimeSpan.Zero;
        long last = Count();
        while (unchanged < Settle && waited < MaxSettle)
        {
            await Task.Delay(poll, cancellationToken);
            waited += poll;
            long now = Count();
            unchanged = now == last ? unchanged + poll : TimeSpan.Zero;
            last = now;
        }
    }
}
