namespace MimFlow.Training.Runs;

/// <summary>
/// What a <see cref="StepTracker"/> has counted so far, for a checkpoint to carry into the resumed run (the run of
/// non-finite losses included, so a resumed run stops exactly where the uninterrupted one would).
/// </summary>
public readonly record struct StepTally(long Skipped, int ConsecutiveNonFinite, double FirstLoss, double LastLoss)
{
    public static StepTally None => new(0, 0, double.NaN, double.NaN);
}

/// <summary>
/// The per-step bookkeeping every training loop shares: the metrics line (<c>step</c>, <c>epoch</c>, <c>loss</c>,
/// <c>lr</c>, <c>images_per_second</c>, <c>input_wait</c>, plus the loop's own terms), first and last finite loss,
/// images seen, and non-finite losses: each skips its step and is counted; more than the allowed number in a row
/// means the run must stop.
/// </summary>
public sealed class StepTracker(MetricsLog metrics, int maxConsecutiveNonFinite, StepTally before)
{
    private int consecutiveNonFinite = before.ConsecutiveNonFinite;

    public StepTracker(MetricsLog metrics, int maxConsecutiveNonFinite, long skippedBefore = 0)
        : this(metrics, maxConsecutiveNonFinite, StepTally.None with { Skipped = skippedBefore })
    {
    }

    public double FirstLoss { get; private set; } = before.FirstLoss;
    public double LastLoss { get; private set; } = before.LastLoss;
    public long Skipped { get; private set; } = before.Skipped;

    /// <summary>Images of the steps this tracker recorded (not those before a resume: a throughput figure).</summary>
    public long Images { get; private set; }

    public StepTally Tally => new(Skipped, consecutiveNonFinite, FirstLoss, LastLoss);

    /// <summary>The numbers of the last metrics line (loss, its terms, lr, images_per_second, input_wait, …), for progress reports.</summary>
    public IReadOnlyDictionary<string, double> LastFigures { get; private set; } = new Dictionary<string, double>();

    /// <summary>Records one step; true when the run must stop (too many non-finite losses in a row).</summary>
    /// <param name="terms">Further values for the metrics line (loss terms, gradient norm, mixing), written after the common ones.</param>
    public bool Record(long step, int epoch, double loss, double lr, int images, double seconds, double waited, IReadOnlyDictionary<string, object>? terms = null)
    {
        if (double.IsFinite(loss))
        {
            consecutiveNonFinite = 0;
            if (double.IsNaN(FirstLoss)) FirstLoss = loss;
            LastLoss = loss;
        }
        else
        {
            Skipped++;
            consecutiveNonFinite++;
        }
        Images += images;
        var entry = new Dictionary<string, object> { ["step"] = step, ["epoch"] = epoch, ["loss"] = loss };
        if (terms is not null)
            foreach (var (name, value) in terms) entry[name] = value;
        entry["lr"] = lr;
        entry["images_per_second"] = images / seconds;
        entry["input_wait"] = waited / seconds;
        if (!double.IsFinite(loss)) entry["skipped"] = true;
        metrics.Write(entry);
        LastFigures = Numbers(entry);
        return consecutiveNonFinite > maxConsecutiveNonFinite;
    }

    private static Dictionary<string, double> Numbers(Dictionary<string, object> entry)
    {
        var figures = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, value) in entry)
        {
            if (name is "step" or "epoch") continue;
            if (value is double or float or int or long) figures[name] = Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture);
        }
        return figures;
    }

    /// <summary>Why the run stopped, for the error it raises.</summary>
    public string StopReason(long step) => $"{consecutiveNonFinite} non-finite losses in a row up to step {step}";
}
