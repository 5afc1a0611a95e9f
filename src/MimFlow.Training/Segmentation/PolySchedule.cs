namespace MimFlow.Training.Segmentation;

/// <summary>
/// mmcv's <c>PolyLrUpdaterHook</c> with linear warmup, the schedule of BEiT's ADE20K configs (unilm
/// <c>semantic_segmentation/configs/beit/upernet/*.py</c>: <c>policy='poly', warmup='linear', warmup_iters=1500,
/// warmup_ratio=1e-6, power=1.0, min_lr=0.0, by_epoch=False</c>): lr(t) = (base − min)·(1 − t/T)^power + min, and
/// during warmup that value times 1 − (1 − t/W)·(1 − ratio). Per step, as mmseg updates per iteration.
/// </summary>
public sealed record PolySchedule(double BaseValue, double MinValue, long TotalSteps, long WarmupSteps = 0, double Power = 1.0, double WarmupRatio = 1e-6)
{
    public double ValueAt(long step)
    {
        double progress = TotalSteps <= 0 ? 1 : Math.Clamp((double)step / TotalSteps, 0, 1);
        double regular = (BaseValue - MinValue) * Math.Pow(1 - progress, Power) + MinValue;
        if (step >= WarmupSteps || WarmupSteps <= 0) return regular;
        double k = (1 - (double)step / WarmupSteps) * (1 - WarmupRatio);
        return regular * (1 - k);
    }
}
