using MimFlow.Core.Diagnostics;

namespace MimFlow.Tests.Core;

public sealed class JitWarmUpTests
{
    /// <summary>A compiled-method count the test drives: each pass adds what the script says, and the reads after a pass
    /// add what the background compiler would (one step per read), so no timing decides the outcome.</summary>
    private sealed class ScriptedJit(params (int During, int[] After)[] passes)
    {
        private long count;
        private int pass;
        private readonly Queue<int> background = new();

        public long Read()
        {
            if (background.TryDequeue(out int step)) count += step;
            return count;
        }

        public Task Pass(CancellationToken _)
        {
            var (during, after) = pass < passes.Length ? passes[pass] : (0, []);
            pass++;
            count += during;
            foreach (int step in after) background.Enqueue(step);
            return Task.CompletedTask;
        }
    }

    private static JitWarmUp With(ScriptedJit jit) => new(jit.Read) { Settle = TimeSpan.FromMilliseconds(20), MaxSettle = TimeSpan.FromSeconds(30) };

    [Fact]
    public async Task Passes_repeat_until_one_compiles_at_most_a_tenth_of_the_first_counting_what_the_background_compiler_adds_after_it()
    {
        // Pass 2 compiles little itself but sets off 60 background compilations: not quiet. Pass 3 compiles 10 of 100.
        var jit = new ScriptedJit((100, []), (5, [20, 20, 20]), (10, []), (0, []));
        Assert.Equal(3, await With(jit).RunAsync(jit.Pass));

        // Without the background work pass 2 would have been quiet.
        var quiet = new ScriptedJit((100, []), (5, []), (50, []));
        Assert.Equal(2, await With(quiet).RunAsync(quiet.Pass));
    }

    [Fact]
    public async Task At_least_the_minimum_and_at_most_the_maximum_of_passes_run()
    {
        var nothing = new ScriptedJit();
        Assert.Equal(2, await With(nothing).RunAsync(nothing.Pass));

        var busy = new ScriptedJit(Enumerable.Repeat((100, Array.Empty<int>()), 20).ToArray());
        Assert.Equal(5, await (With(busy) with { MaxPasses = 5 }).RunAsync(busy.Pass));
    }
}
