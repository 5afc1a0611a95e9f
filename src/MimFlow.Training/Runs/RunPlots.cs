using MimFlow.Core.IO;

namespace MimFlow.Training.Runs;

/// <summary><c>mimflow plot RUN_DIR</c>: loss (with every logged term), learning rate and throughput against the step, as PNG.</summary>
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
