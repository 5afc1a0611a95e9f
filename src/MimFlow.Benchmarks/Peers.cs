using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace MimFlow.Benchmarks;

/// <summary>One line of <c>peer_beit_step.py</c>: a mode (eager tf32, eager bf16, torch.compile bf16) and its rate.</summary>
public sealed record PeerStep(string Mode, double ImagesPerSecond, double StepMilliseconds, string PeakMemory);

/// <summary>What <c>peer_data.py</c> printed: images/s per worker count, and its lines for the log.</summary>
public sealed record PeerData(IReadOnlyDictionary<int, double> ImagesPerSecond, IReadOnlyList<string> Lines);

/// <summary>
/// The peers, run as child processes in the same invocation as MimFlow's own measurement (same machine, same moment):
/// the PyTorch BEiT training step and the torchvision + PIL data pipeline. Their printed figures are parsed here.
/// </summary>
public static partial class Peers
{
    public static async Task<IReadOnlyList<PeerStep>> TrainStepAsync(string python, string script, int batchSize, CancellationToken cancellationToken)
    {
        string output = await RunAsync(python, [script, batchSize.ToString(CultureInfo.InvariantCulture)], cancellationToken);
        return StepLine().Matches(output).Select(m => new PeerStep(m.Groups[1].Value, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
            double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), m.Groups[4].Value + " GiB")).ToList();
    }

    /// <summary>The data peer writes its JPEGs into <paramref name="folder"/> first (if absent), then reads them with each worker count.</summary>
    public static async Task<PeerData> DataAsync(string python, string script, string folder, int images, IReadOnlyList<int> workers, CancellationToken cancellationToken, string? pin = null)
    {
        string output = await RunAsync(python, [script, folder, images.ToString(CultureInfo.InvariantCulture), string.Join(',', workers)], cancellationToken, pin);
        var rates = new Dictionary<int, double>();
        foreach (Match match in DataLine().Matches(output))
            rates[int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture)] = double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        return new PeerData(rates, output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>
    /// ops/bench/peer_recipes.py for one recipe and worker count (its other recipes: two-view, fine-tuning, multi-crop,
    /// segmentation), the same DataLoader set-up as peer_data.py.
    /// </summary>
    public static async Task<PeerData> RecipeAsync(string python, string script, string folder, int images, int workers, string recipe, CancellationToken cancellationToken, string? pin = null)
    {
        string output = await RunAsync(python, [script, folder, images.ToString(CultureInfo.InvariantCulture), workers.ToString(CultureInfo.InvariantCulture), recipe], cancellationToken, pin);
        var rates = new Dictionary<int, double>();
        foreach (Match match in DataLine().Matches(output))
            rates[int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture)] = double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        return new PeerData(rates, output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>PIL's full decode of the first <paramref name="images"/> files (<c>Image.open(f).load()</c>), images/s: the decode limit.</summary>
    public static async Task<(double ImagesPerSecond, string Line)> DecodeOnlyAsync(string python, string script, string folder, int images, CancellationToken cancellationToken, string? pin = null)
    {
        string output = await RunAsync(python, [script, folder, images.ToString(CultureInfo.InvariantCulture), "0", "decode"], cancellationToken, pin);
        var match = DecodeLine().Match(output);
        if (!match.Success) throw new IOException($"the peer {script} printed no decode rate: {output.Trim()}");
        return (double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), output.Trim());
    }

    /// <summary>
    /// Pins this whole process (every thread, and so every thread and child started later) to <paramref name="cores"/>
    /// with <c>taskset -a -p</c>, as the peers are pinned, so both sides run on the same cores.
    /// </summary>
    public static async Task PinSelfAsync(string cores, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("taskset") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in (string[])["-a", "-c", "-p", cores, Environment.ProcessId.ToString(CultureInfo.InvariantCulture)]) start.ArgumentList.Add(argument);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new IOException("could not start taskset");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new IOException($"--pin needs taskset (util-linux): {e.Message}", e);
        }
        using (process)
        {
            string error = await process.StandardError.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            if (process.ExitCode != 0) throw new IOException($"taskset -a -c -p {cores} failed (exit {process.ExitCode}): {error.Trim()}");
        }
    }

    private static async Task<string> RunAsync(string python, IReadOnlyList<string> arguments, CancellationToken cancellationToken, string? pin = null)
    {
        string script = arguments[0];
        if (!File.Exists(script)) throw new FileNotFoundException($"{script}: peer script not found", script);
        var start = new ProcessStartInfo(pin is null ? python : "taskset") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (pin is not null)
        {
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(pin);
            start.ArgumentList.Add(python);
        }
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new IOException($"could not start {python}");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        string output = await stdout;
        if (process.ExitCode != 0)
            throw new IOException($"the peer {script} failed (exit {process.ExitCode}): {(await stderr).Trim().Split('\n').LastOrDefault()}");
        return output;
    }

    [GeneratedRegex(@"(\w+)\s+batch\s+\d+:\s+([\d.]+) img/s\s+step\s+([\d.]+) ms\s+peak mem\s+([\d.]+) GiB")]
    private static partial Regex StepLine();

    [GeneratedRegex(@"workers\s+(\d+):\s+([\d.]+) img/s")]
    private static partial Regex DataLine();

    [GeneratedRegex(@"PIL decode:\s+([\d.]+) img/s")]
    private static partial Regex DecodeLine();
}
