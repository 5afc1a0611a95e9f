namespace MimFlow.Training.Distributed;

/// <summary>
/// Bounds every collective: a rank that never joins one (killed without its launcher noticing, stalled on a dead
/// filesystem, a node gone) would otherwise hold the others in it for ever. When a collective has waited past the
/// timeout the watchdog says which collective, on which rank, for how long, and ends the job through the engine's
/// abort (MPI_Abort, ncclCommAbort then exit), so the scheduler sees a failure and can restart with --resume.
/// The timeout is MIMFLOW_COLLECTIVE_TIMEOUT seconds (default 600: longer than any step, checkpoint or epoch start).
/// </summary>
public sealed class CollectiveWatchdog : IDisposable
{
    public const string TimeoutVariable = "MIMFLOW_COLLECTIVE_TIMEOUT";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(600);

    private readonly TimeSpan timeout;
    private readonly int rank;
    private readonly Action<string> abort;
    private readonly Timer timer;
    private readonly Lock gate = new();
    private string current = "";
    private DateTime since;
    private int fired;

    public CollectiveWatchdog(TimeSpan timeout, int rank, Action<string> abort)
    {
        if (timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "the collective timeout must be positive");
        this.timeout = timeout;
        this.rank = rank;
        this.abort = abort;
        timer = new Timer(_ => Fire(), null, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>The timeout from MIMFLOW_COLLECTIVE_TIMEOUT (seconds), else <see cref="DefaultTimeout"/>.</summary>
    public static TimeSpan TimeoutFromEnvironment()
    {
        string? text = Environment.GetEnvironmentVariable(TimeoutVariable);
        if (string.IsNullOrEmpty(text)) return DefaultTimeout;
        if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double seconds) || !(seconds > 0))
            throw new ArgumentException($"{TimeoutVariable}='{text}' is not a positive number of seconds");
        return TimeSpan.FromSeconds(seconds);
    }

    /// <summary>Starts the clock for one collective; disposing the result stops it.</summary>
    public Armed Arm(string what)
    {
        lock (gate)
        {
            current = what;
            since = DateTime.UtcNow;
            timer.Change(timeout, Timeout.InfiniteTimeSpan);
        }
        return new Armed(this);
    }

    private void Disarm()
    {
        lock (gate) timer.Change(Timeout.Infinite, Timeout.Infinite);
    }

    private void Fire()
    {
        if (Interlocked.Exchange(ref fired, 1) != 0) return;
        string what;
        double waited;
        lock (gate)
        {
            what = current;
            waited = (DateTime.UtcNow - since).TotalSeconds;
        }
        abort($"mimflow rank {rank}: the collective '{what}' waited {waited:F0} s (timeout {timeout.TotalSeconds:F0} s, {TimeoutVariable}) for the other ranks: " +
              "a rank is lost or stalled; ending the job (restart it with --resume)");
    }

    public void Dispose() => timer.Dispose();

    public readonly struct Armed(CollectiveWatchdog owner) : IDisposable
    {
        public void Dispose() => owner.Disarm();
    }
}
