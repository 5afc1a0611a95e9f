using MimFlow.Core.IO;

namespace MimFlow.Training.Runs;

/// <summary>
/// <c>mimflow plot RUN_DIR</c>: loss (with every logged term), accuracies (masked-token, aggregation, iBOT's
/// teacher–student agreement) on their own 0–1 axis, learning rate and throughput against the step, as PNG.
/// </summary>
public static class RunPlots
{
    public static IReadOnlyList<string> Draw(string runDirectory, string? outputDirectory = null)
    {
        var entries = MetricsLog.Read(runDirectory).ToList();
        if (entries.Count == 0) throw new InvalidDataException($"{Path.Combine(runDirectory, MetricsLog.FileName)}: no steps logged yet");
        string output = outputDirectory ?? runDirectory;
        Directory.CreateDirectory(output);
        double[] steps = entries.Select(e => (double)e["step"]!.GetValue<long>()).ToArray();
        double[] Series(string name) => entries.Select(e => e[name] is { } v ? v.GetValue<double>() : double.NaN).ToArray();
        var written = new List<string>();

        var lossNames = entries[0].Select(p => p.Key).Where(k => k == "loss" || k.StartsWith("loss_", StringComparison.Ordinal)).ToList();
        written.Add(Save(output, "loss.png", "loss", "step", "loss", plot =>
        {
            foreach (string name in lossNames)
            {
                var line = plot.Add.Scatter(steps, Series(name));
                line.LegendText = name;
                line.MarkerSize = 0;
            }
            plot.ShowLegend();
        }));
        var accuracyNames = entries[0].Select(p => p.Key).Where(IsAccuracy).ToList();
        if (accuracyNames.Count > 0)
            written.Add(Save(output, "accuracy.png", "accuracy", "step", "accuracy", plot =>
            {
                foreach (string name in accuracyNames)
                {
                    var line = plot.Add.Scatter(steps, Series(name));
                    line.LegendText = name;
                    line.MarkerSize = 0;
                }
                plot.Axes.SetLimitsY(0, 1);
                plot.ShowLegend();
            }));
        written.Add(Save(output, "lr.png", "learning rate", "step", "lr", plot =>
        {
            var line = plot.Add.Scatter(steps, Series("lr"));
            line.MarkerSize = 0;
        }));
        written.Add(Save(output, "throughput.png", "throughput", "step", "images / s", plot =>
        {
            var line = plot.Add.Scatter(steps, Series("images_per_second"));
            line.MarkerSize = 0;
        }));
        return written;
    }

    /// <summary>Accuracies are logged as <c>acc</c> or <c>NAME_acc</c> (as unilm and iBOT log them).</summary>
    private static bool IsAccuracy(string name) => name == "acc" || name.EndsWith("_acc", StringComparison.Ordinal);

    private static string Save(string folder, string name, string title, string x, string y, Action<ScottPlot.Plot> draw)
    {
        var plot = new ScottPlot.Plot();
        draw(plot);
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        string path = Path.Combine(folder, name);
        AtomicFile.Write(path, temporary => plot.SavePng(temporary, 900, 500));
        return path;
    }
}
