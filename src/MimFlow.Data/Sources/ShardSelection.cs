using System.Globalization;
using System.Text.RegularExpressions;
using MimFlow.Core.IO;

namespace MimFlow.Data.Sources;

/// <summary>The shard files a wds or hf-parquet dataset is read from, and the folder their relative paths start at.</summary>
/// <param name="Root">The folder holding the shards (for shards in several folders, their deepest common folder).</param>
/// <param name="Files">Full paths, in reading order.</param>
internal sealed record SelectedShards(string Root, IReadOnlyList<string> Files)
{
    /// <summary>A shard's path relative to <see cref="Root"/>, '/'-separated: its file name in the common case.</summary>
    public string RelativeName(string file) => Path.GetRelativePath(Root, file).Replace(Path.DirectorySeparatorChar, '/');
}

/// <summary>
/// Which shard files (<c>.tar</c> or <c>.parquet</c>) make up a split.
/// <list type="number">
/// <item>A brace pattern (<c>/x/in1k-train-{0000..1023}.tar</c>, <c>{a,b}</c> lists, nested) or a single file: those
/// files, as given (the split is not consulted); each must exist.</item>
/// <item>A folder: in it, then in its <c>data/</c> (Hugging Face repositories), a subfolder named for the split
/// (train: <c>train</c>, <c>training</c>; val: <c>val</c>, <c>valid</c>, <c>validation</c>) holding shards is taken whole.
/// Else the shards directly there: those whose file name carries the split as a word (<c>imagenet1k-train-0000.tar</c>,
/// <c>validation-00000-of-00001.parquet</c>); if no file name names any split (train, val, valid, validation, test),
/// all of them form the training split, and asking for val is an error.</item>
/// </list>
/// Files are ordered by name in code-point order (a pattern keeps its own order); hidden temporary files of an
/// unfinished write are never taken.
/// </summary>
internal static partial class ShardSelection
{
    private static readonly string[] TrainFolders = ["train", "training"];
    private static readonly string[] ValidationFolders = ["val", "valid", "validation"];

    public static SelectedShards Select(string data, string extension, DatasetSplit split, string layoutName)
    {
        if (data.Contains('{'))
        {
            var files = BraceExpansion.Expand(data).Select(Path.GetFullPath).ToList();
            string? missing = files.FirstOrDefault(f => !File.Exists(f));
            if (missing is not null)
                throw new FileNotFoundException($"{missing}: no such file ({files.Count(f => !File.Exists(f))} of the {files.Count} files of the pattern {data} are missing)", missing);
            if (files.Distinct(StringComparer.Ordinal).Count() != files.Count) throw new ArgumentException($"the pattern {data} names a file twice");
            return new SelectedShards(CommonFolder(files), files);
        }
        string full = Path.GetFullPath(data);
        if (File.Exists(full)) return new SelectedShards(Path.GetDirectoryName(full)!, [full]);
        if (!Directory.Exists(full)) throw new DirectoryNotFoundException($"{full}: no such folder or {extension} file ({layoutName})");

        string[] wanted = split == DatasetSplit.Train ? TrainFolders : ValidationFolders;
        var bases = new[] { full, Path.Combine(full, "data") }.Where(Directory.Exists).ToList();
        foreach (string folder in bases)
            foreach (string name in wanted)
            {
                string sub = Path.Combine(folder, name);
                if (Directory.Exists(sub) && ShardsIn(sub, extension) is { Count: > 0 } inSub) return new SelectedShards(sub, inSub);
            }
        foreach (string folder in bases)
        {
            var shards = ShardsIn(folder, extension);
            if (shards.Count == 0) continue;
            var named = shards.Where(f => NamesASplit(Path.GetFileName(f))).ToList();
            if (named.Count == 0)
            {
                if (split == DatasetSplit.Train) return new SelectedShards(folder, shards);
                throw new FileNotFoundException($"{folder}: no validation shards: no val/ or validation/ folder, and none of its {shards.Count} {extension} files names a split (they all form the training split)");
            }
            var chosen = named.Where(f => split == DatasetSplit.Train ? TrainWord().IsMatch(Path.GetFileName(f)) : ValidationWord().IsMatch(Path.GetFileName(f))).ToList();
            if (chosen.Count > 0) return new SelectedShards(folder, chosen);
            throw new FileNotFoundException($"{folder}: no {(split == DatasetSplit.Train ? "train" : "validation")} shards among its {shards.Count} {extension} files (names carry other splits)");
        }
        throw new FileNotFoundException($"{full}: no {extension} files for {layoutName} (looked in it{(bases.Count > 1 ? " and in data/" : "")}, and in {string.Join("/, ", wanted)}/ below)");
    }

    private static List<string> ShardsIn(string folder, string extension) =>
        DatasetSource.SortedNames(Directory.EnumerateFiles(folder))
            .Where(name => name.EndsWith(extension, StringComparison.OrdinalIgnoreCase) && !AtomicFile.IsTemporaryName(name))
            .Select(name => Path.Combine(folder, name))
            .ToList();

    private static bool NamesASplit(string name) => TrainWord().IsMatch(name) || ValidationWord().IsMatch(name) || TestWord().IsMatch(name);

    private static string CommonFolder(IReadOnlyList<string> files)
    {
        string common = Path.GetDirectoryName(files[0])!;
        foreach (string file in files.Skip(1))
        {
            string folder = Path.GetDirectoryName(file)!;
            while (!(folder + Path.DirectorySeparatorChar).StartsWith(common + Path.DirectorySeparatorChar, StringComparison.Ordinal) && folder != common)
                common = Path.GetDirectoryName(common) ?? Path.GetPathRoot(common)!;
        }
        return common;
    }

    // A split is a word of the file name: letters do not continue it on either side (digits and separators may).
    [GeneratedRegex("(?<![A-Za-z])train(ing)?(?![A-Za-z])", RegexOptions.IgnoreCase)]
    private static partial Regex TrainWord();

    [GeneratedRegex("(?<![A-Za-z])(val|valid|validation)(?![A-Za-z])", RegexOptions.IgnoreCase)]
    private static partial Regex ValidationWord();

    [GeneratedRegex("(?<![A-Za-z])test(ing)?(?![A-Za-z])", RegexOptions.IgnoreCase)]
    private static partial Regex TestWord();
}

/// <summary>
/// Shell-style brace expansion as WebDataset shard lists use it: <c>{0000..1023}</c> (zero-padded to the wider bound
/// when a bound starts with 0; a descending range counts down), <c>{a,b,c}</c> lists, several and nested groups (their
/// product, left to right). A group that is neither a range nor a list stays literal, as in bash.
/// </summary>
public static partial class BraceExpansion
{
    /// <summary>Patterns expanding to more names than this are refused (a typo such as {0..99999999}).</summary>
    public const int MaxNames = 1_000_000;

    public static IReadOnlyList<string> Expand(string pattern)
    {
        var names = new List<string>();
        ExpandInto(pattern, "", names, pattern);
        return names;
    }

    /// <summary>Adds <paramref name="done"/> + every expansion of <paramref name="text"/>.</summary>
    private static void ExpandInto(string text, string done, List<string> names, string pattern)
    {
        int open = text.IndexOf('{');
        if (open < 0)
        {
            if (names.Count >= MaxNames) throw new ArgumentException($"the pattern {pattern} expands to more than {MaxNames:N0} names");
            names.Add(done + text);
            return;
        }
        int close = MatchingClose(text, open) ?? throw new ArgumentException($"the pattern {pattern} has an unbalanced '{{'");
        string prefix = text[..open], suffix = text[(close + 1)..];
        if (Alternatives(text[(open + 1)..close], pattern) is not { } alternatives)
        {
            ExpandInto(suffix, done + text[..(close + 1)], names, pattern);
            return;
        }
        // An alternative may hold groups of its own: it is expanded again together with what follows it.
        foreach (string alternative in alternatives) ExpandInto(alternative + suffix, done + prefix, names, pattern);
    }

    private static int? MatchingClose(string text, int open)
    {
        int depth = 0;
        for (int i = open; i < text.Length; i++)
        {
            if (text[i] == '{') depth++;
            else if (text[i] == '}' && --depth == 0) return i;
        }
        return null;
    }

    /// <summary>The alternatives of one group's body, or null when it is neither a range nor a list.</summary>
    private static List<string>? Alternatives(string body, string pattern)
    {
        var range = RangeBody().Match(body);
        if (range.Success)
        {
            string from = range.Groups[1].Value, to = range.Groups[2].Value;
            if (!long.TryParse(from, CultureInfo.InvariantCulture, out long a) || !long.TryParse(to, CultureInfo.InvariantCulture, out long b) || Math.Abs(b - a) >= MaxNames)
                throw new ArgumentException($"the pattern {pattern} expands to more than {MaxNames:N0} names");
            int width = Padded(from) || Padded(to) ? Math.Max(from.Length, to.Length) : 0;
            var values = new List<string>();
            for (long v = a; a <= b ? v <= b : v >= b; v += a <= b ? 1 : -1)
                values.Add(v.ToString(CultureInfo.InvariantCulture).PadLeft(width, '0'));
            return values;
        }
        var parts = new List<string>();
        int depth = 0, start = 0;
        for (int i = 0; i < body.Length; i++)
        {
            if (body[i] == '{') depth++;
            else if (body[i] == '}') depth--;
            else if (body[i] == ',' && depth == 0)
            {
                parts.Add(body[start..i]);
                start = i + 1;
            }
        }
        if (parts.Count == 0) return null;
        parts.Add(body[start..]);
        return parts;
    }

    private static bool Padded(string bound) => bound.Length > 1 && bound[0] == '0';

    [GeneratedRegex(@"^(\d+)\.\.(\d+)$")]
    private static partial Regex RangeBody();
}
