namespace MimFlow.Cli.Reporting;

/// <summary>
/// One number of a task's state. Its name is the one word used everywhere it appears: text lines (<c>loss=6.123</c>),
/// JSON lines (<c>"loss": 6.123</c>) and Prometheus (<c>mimflow_loss</c>), so a figure is found by the same name in each.
/// </summary>
/// <param name="Shown">Whether text lines and bars show it; JSON lines and Prometheus carry every figure.</param>
public readonly record struct ProgressFigure(string Name, double Value, string Format = "0.###", bool Shown = true);

/// <summary>Where a task stands: units done of a total (≤ 0: unknown), and its figures.</summary>
public sealed record ProgressReport(double Done, double Total, IReadOnlyList<ProgressFigure> Figures)
{
    public ProgressReport(double done, double total, params ProgressFigure[] figures) : this(done, total, (IReadOnlyList<ProgressFigure>)figures)
    {
    }

    /// <summary>
    /// A training step's report: the loss and throughput shown, every other number of its metrics line carried (lr,
    /// loss terms, grad_norm, input_wait, …), and <c>step</c>.
    /// </summary>
    public static ProgressReport FromStep(long step, long totalSteps, IReadOnlyDictionary<string, double> metrics, params ProgressFigure[] extra)
    {
        var figures = new List<ProgressFigure> { new("step", step + 1, "0", Shown: false) };
        foreach (var (name, value) in metrics)
            figures.Add(name switch
            {
                "loss" => new ProgressFigure(name, value, "0.0000"),
                "images_per_second" => new ProgressFigure(name, value, "0.0"),
                _ => new ProgressFigure(name, value, "0.####", Shown: false),
            });
        figures.AddRange(extra);
        return new ProgressReport(step + 1, totalSteps, figures);
    }
}
