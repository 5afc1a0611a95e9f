using System.Diagnostics;
using System.Text.Json.Nodes;
using MimFlow.Core.Safetensors;
using Xunit.Abstractions;

namespace MimFlow.Tests.Fuzz;

/// <summary>One damaged input: what was done to it (for the failure report) and its bytes.</summary>
internal sealed record FuzzCase(string Label, byte[] Bytes);

/// <summary>
/// Deterministic damage to a file's bytes: truncations at the places parsers look (the first bytes, the header's end,
/// halves, the last byte) and elsewhere, single-byte replacements and bit flips (uniform, and concentrated in the
/// first and last 512 bytes, where headers and zip directories live), runs of 0x00 and 0xFF, and 64-bit integers
/// written over a spot. The same seed gives the same cases on every machine.
/// </summary>
internal static class Mutations
{
    public static IEnumerable<FuzzCase> Of(byte[] original, int seed, int count, IReadOnlyList<int>? hotSpots = null)
    {
        var random = new Random(seed);
        int length = original.Length;
        var cuts = new SortedSet<int> { 0, 1, 7, 8, 9, 16, length / 2, length - 1 };
        while (cuts.Count < Math.Min(length, 8 + count / 4)) cuts.Add(random.Next(length));
        foreach (int cut in cuts.Where(c => c >= 0 && c < length)) yield return new FuzzCase($"truncated at {cut}/{length}", original[..cut]);
        for (int i = 0; i < count; i++)
        {
            byte[] bytes = (byte[])original.Clone();
            int kind = random.Next(6);
            int at = random.Next(3) switch
            {
                0 => random.Next(Math.Min(length, 512)),
                1 => Math.Max(0, length - 1 - random.Next(Math.Min(length, 512))),
                _ when hotSpots is { Count: > 0 } && random.Next(2) == 0 => Math.Clamp(hotSpots[random.Next(hotSpots.Count)] + random.Next(-48, 48), 0, length - 1),
                _ => random.Next(length),
            };
            string label;
            switch (kind)
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    label = $"byte {at} = 0x{bytes[at]:X2}";
                    break;
                case 1:
                    int bit = random.Next(8);
                    bytes[at] ^= (byte)(1 << bit);
                    label = $"bit {bit} of byte {at} flipped";
                    break;
                case 2:
                case 3:
                    byte fill = kind == 2 ? (byte)0x00 : (byte)0xFF;
                    int run = Math.Min(length - at, 1 + random.Next(16));
                    bytes.AsSpan(at, run).Fill(fill);
                    label = $"{run} bytes of 0x{fill:X2} at {at}";
                    break;
                case 4:
                    long value = random.Next(4) switch { 0 => long.MaxValue, 1 => -1, 2 => 1L << 40, _ => random.NextInt64() };
                    int place = Math.Min(at, Math.Max(0, length - 8));
                    BitConverter.GetBytes(value).AsSpan(0, Math.Min(8, length - place)).CopyTo(bytes.AsSpan(place));
                    label = $"int64 {value} at {place}";
                    break;
                default:
                    int a = random.Next(length), b = random.Next(length);
                    (bytes[a], bytes[b]) = (bytes[b], bytes[a]);
                    label = $"bytes {a} and {b} swapped";
                    break;
            }
            yield return new FuzzCase(label, bytes);
        }
    }

    /// <summary>
    /// Well-formed safetensors files with the wrong content, as a different or damaged model would give: a tensor left
    /// out, renamed (one character changed), given another shape (a dimension plus one, zero, halved, or an extra
    /// axis; the data resized to match, zero-filled) or another dtype; the rest unchanged.
    /// </summary>
    public static IEnumerable<FuzzCase> OfSafetensors(string path, int seed, int count)
    {
        var random = new Random(seed);
        using var file = SafetensorsFile.Open(path);
        var entries = file.Entries.ToList();
        var copies = entries.ToDictionary(e => e.Name, e => file.Bytes(e).ToArray());
        for (int i = 0; i < count; i++)
        {
            var target = entries[random.Next(entries.Count)];
            var writer = new SafetensorsWriter();
            string label = "";
            foreach (var entry in entries)
            {
                if (entry != target)
                {
                    writer.Add(entry.Name, entry.DType, entry.Shape, copies[entry.Name]);
                    continue;
                }
                switch (random.Next(4))
                {
                    case 0:
                        label = $"'{entry.Name}' left out";
                        break;
                    case 1:
                        char[] name = entry.Name.ToCharArray();
                        int at = random.Next(name.Length);
                        name[at] = name[at] == '0' ? '7' : "0.x_"[random.Next(4)];
                        string renamed = new(name);
                        if (entries.Any(e => e.Name == renamed)) renamed += "_";
                        writer.Add(renamed, entry.DType, entry.Shape, copies[entry.Name]);
                        label = $"'{entry.Name}' renamed '{renamed}'";
                        break;
                    case 2:
                        long[] shape = [.. entry.Shape];
                        int axis = shape.Length == 0 ? -1 : random.Next(shape.Length);
                        int how = random.Next(4);
                        if (axis < 0 || how == 3) shape = [.. shape, 2];
                        else shape[axis] = how switch { 0 => shape[axis] + 1, 1 => 0, _ => shape[axis] / 2 };
                        long bytes = shape.Aggregate(1L, (a, b) => a * b) * entry.DType.Size();
                        writer.Add(entry.Name, entry.DType, shape, new byte[bytes]);
                        label = $"'{entry.Name}' reshaped [{string.Join(", ", entry.Shape)}] → [{string.Join(", ", shape)}]";
                        break;
                    default:
                        var dtype = (SafetensorsDType)random.Next(10);
                        long elements = entry.Shape.Aggregate(1L, (a, b) => a * b);
                        writer.Add(entry.Name, dtype, entry.Shape, new byte[elements * dtype.Size()]);
                        label = $"'{entry.Name}' as {dtype}";
                        break;
                }
            }
            string temporary = Path.Combine(Path.GetDirectoryName(path)!, $".fuzz-{i}.safetensors");
            writer.Write(temporary);
            byte[] result = File.ReadAllBytes(temporary);
            File.Delete(temporary);
            yield return new FuzzCase(label, result);
        }
    }

    /// <summary>Every offset at which <paramref name="marker"/> occurs, to aim damage at a format's structures.</summary>
    public static List<int> Find(byte[] bytes, ReadOnlySpan<byte> marker)
    {
        var found = new List<int>();
        for (int from = 0; ;)
        {
            int at = bytes.AsSpan(from).IndexOf(marker);
            if (at < 0) return found;
            found.Add(from + at);
            from += at + 1;
        }
    }

    /// <summary>
    /// Structure-aware damage to a JSON document: every value (depth-first) replaced by each of a palette of hostile
    /// values (zero, negatives, huge and non-integral numbers, wrong types), each key removed, and an unknown key
    /// added to every object; <paramref name="limit"/> cases drawn from that list with the seed.
    /// </summary>
    public static IEnumerable<FuzzCase> OfJson(string json, int seed, int limit)
    {
        JsonNode?[] palette =
        [
            0, -1, 1, 3, 7, 1_000_000_000, 2147483648L, 1e30, 0.5, -0.0, "x", "", null, true, false, new JsonArray(), new JsonObject(),
            new JsonArray(1, 2), new JsonArray(3, 100000, 100000),
        ];
        var all = new List<(string Label, Func<JsonNode, bool> Apply)>();
        var root = JsonNode.Parse(json)!;
        foreach (var (path, _) in Leaves(root, ""))
        {
            foreach (var value in palette)
            {
                string shown = value?.ToJsonString() ?? "null";
                all.Add(($"{path} = {shown}", node => Replace(node, path, value?.DeepClone())));
            }
            all.Add(($"{path} removed", node => Replace(node, path, null, remove: true)));
        }
        foreach (var (path, node) in Objects(root, ""))
            all.Add(($"{(path.Length == 0 ? "root" : path)} gets an unknown key", n => Replace(n, path.Length == 0 ? "zz_unknown" : path + ".zz_unknown", 1)));
        var random = new Random(seed);
        foreach (var (label, apply) in all.OrderBy(_ => random.Next()).Take(limit))
        {
            var copy = JsonNode.Parse(json)!;
            if (apply(copy)) yield return new FuzzCase(label, System.Text.Encoding.UTF8.GetBytes(copy.ToJsonString()));
        }
    }

    private static IEnumerable<(string Path, JsonNode? Node)> Leaves(JsonNode? node, string path)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (key, value) in obj)
                    foreach (var leaf in Leaves(value, path.Length == 0 ? key : $"{path}.{key}")) yield return leaf;
                break;
            case JsonArray array:
                yield return (path, node);
                for (int i = 0; i < array.Count; i++)
                    foreach (var leaf in Leaves(array[i], $"{path}.{i}")) yield return leaf;
                break;
            default:
                yield return (path, node);
                break;
        }
    }

    private static IEnumerable<(string Path, JsonObject Node)> Objects(JsonNode? node, string path)
    {
        if (node is JsonObject obj)
        {
            yield return (path, obj);
            foreach (var (key, value) in obj)
                foreach (var inner in Objects(value, path.Length == 0 ? key : $"{path}.{key}")) yield return inner;
        }
    }

    private static bool Replace(JsonNode root, string path, JsonNode? value, bool remove = false)
    {
        string[] parts = path.Split('.');
        JsonNode? parent = root;
        foreach (string part in parts[..^1])
            parent = parent switch { JsonObject o => o[part], JsonArray a when int.TryParse(part, out int i) && i < a.Count => a[i], _ => null };
        string last = parts[^1];
        switch (parent)
        {
            case JsonObject o:
                if (remove) o.Remove(last);
                else o[last] = value;
                return true;
            case JsonArray a when int.TryParse(last, out int index) && index < a.Count:
                if (remove) a.RemoveAt(index);
                else a[index] = value;
                return true;
            default:
                return false;
        }
    }
}

/// <summary>
/// Runs cases and sorts their outcomes: an exact or valid result, a clean refusal (an allowed exception type whose
/// message names the file), or a failure — any other exception, a refusal that does not name the file, or a case
/// that runs past its time (a hang). Failures are collected so one run reports all it found.
/// </summary>
internal sealed class FuzzRun(string what, ITestOutputHelper output)
{
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(20);

    private readonly List<string> failures = [];
    private readonly Stopwatch watch = Stopwatch.StartNew();
    private readonly Dictionary<string, int> refusals = new(StringComparer.Ordinal);
    private int cases, valid;

    /// <summary>Runs one case; <paramref name="names"/> are the strings a refusal must mention (one of them suffices).</summary>
    public void Case(string label, Action action, IReadOnlyList<string> names, params Type[] allowed)
    {
        cases++;
        var task = Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        bool finished;
        try
        {
            finished = task.Wait(CaseTimeout);
        }
        catch (AggregateException)
        {
            finished = true;
        }
        if (!finished)
        {
            failures.Add($"{label}: no outcome after {CaseTimeout.TotalSeconds:F0} s (a hang)");
            return;
        }
        if (task.Exception?.InnerException is not { } error)
        {
            valid++;
            return;
        }
        if (!allowed.Any(t => t.IsInstanceOfType(error)))
            failures.Add($"{label}: {error.GetType().Name}: {error.Message.Split('\n')[0]}{Environment.NewLine}    at {error.StackTrace?.Split('\n').FirstOrDefault()?.Trim()}");
        else if (names.Count > 0 && !names.Any(n => error.Message.Contains(n, StringComparison.Ordinal)))
            failures.Add($"{label}: {error.GetType().Name} does not name the file: {error.Message.Split('\n')[0]}");
        else
        {
            string kind = error.GetType().Name;
            refusals[kind] = refusals.GetValueOrDefault(kind) + 1;
        }
    }

    public void Fail(string label, string problem) => failures.Add($"{label}: {problem}");

    /// <summary>Reports counts and time, then fails with every failure found.</summary>
    public void Finish()
    {
        output.WriteLine($"{what}: {cases} cases in {watch.Elapsed.TotalSeconds:F1} s: {valid} valid, refused {string.Join(", ", refusals.Select(r => $"{r.Value} ({r.Key})"))}, {failures.Count} failures");
        foreach (string failure in failures.Take(40)) output.WriteLine(failure);
        Assert.True(failures.Count == 0, $"{what}: {failures.Count} of {cases} cases failed:{Environment.NewLine}{string.Join(Environment.NewLine, failures.Take(40))}");
    }
}
