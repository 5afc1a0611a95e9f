namespace MimFlow.Training.Optimization;

/// <summary>
/// BEiT's <c>cosine_scheduler</c> as a pure function of the step, so a resumed run reads the same value at the same
/// step without replaying anything: a linear warmup (numpy's <c>linspace(start, base, warmup)</c>, which reaches the
/// base value on the last warmup step), then a half cosine from the base value at step <c>warmup</c> towards the final
/// value, which it would reach at step <c>total</c>. BEiT builds the learning rate, the weight decay and (iBOT, BEiT v2's
/// teacher) the EMA momentum from this one shape; steps at or past <see cref="TotalSteps"/> read the final value.
/// Values equal BEiT's to the last bit or two; the first cosine step and the end are returned exactly.
/// </summary>
public sealed record CosineSchedule
{
    public CosineSchedule(double baseValue, double finalValue, long totalSteps, long warmupSteps = 0, double warmupStartValue = 0)
    {
        if (totalSteps <= 0) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "a schedule needs at least one step.");
        if (warmupSteps < 0 || warmupSteps > totalSteps)
            throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, $"warmup must lie in [0, {totalSteps}].");
        BaseValue = baseValue;
        FinalValue = finalValue;
        TotalSteps = totalSteps;
        WarmupSteps = warmupSteps;
        WarmupStartValue = warmupStartValue;
    }

    public double BaseValue { get; }

    public double FinalValue { get; }

    public long TotalSteps { get; }

    public long WarmupSteps { get; }

    public double WarmupStartValue { get; }

    /// <summary>BEiT's learning rate: warmup from <paramref name="warmupStartLr"/> to <paramref name="baseLr"/>, cosine to <paramref name="minLr"/>.</summary>
    public static CosineSchedule LearningRate(double baseLr, double minLr, long totalSteps, long warmupSteps, double warmupStartLr = 0) =>
        new(baseLr, minLr, totalSteps, warmupSteps, warmupStartLr);

    /// <summary>BEiT's weight decay schedule (no warmup): <paramref name="start"/> to <paramref name="end"/>, e.g. 0.04 → 0.4 in iBOT.</summary>
    public static CosineSchedule WeightDecay(double start, double end, long totalSteps) => new(start, end, totalSteps);

    /// <summary>iBOT / DINO teacher momentum (no warmup): 0.996 rising to 1 along a cosine.</summary>
    public static CosineSchedule EmaMomentum(long totalSteps, double start = 0.996, double end = 1.0) => new(start, end, totalSteps);

    public double ValueAt(long step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < WarmupSteps)
        {
            // numpy's linspace: start + i·((stop − start)/(n − 1)), the last element exactly stop.
            if (step == WarmupSteps - 1) return WarmupSteps == 1 ? WarmupStartValue : BaseValue;
            return WarmupStartValue + step * ((BaseValue - WarmupStartValue) / (WarmupSteps - 1));
        }
        long cosineSteps = TotalSteps - WarmupSteps;
        if (cosineSteps == 0) return FinalValue;
        long i = Math.Min(step - WarmupSteps, cosineSteps);
        // The ends exactly (BEiT's formula can land an ulp off, e.g. 0.03999999999999998 for a 0.04 start).
        if (i == 0) return BaseValue;
        if (i == cosineSteps) return FinalValue;
        return FinalValue + 0.5 * (BaseValue - FinalValue) * (1 + Math.Cos(Math.PI * i / cosineSteps));
    }
}
