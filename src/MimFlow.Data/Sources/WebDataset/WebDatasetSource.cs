using MimFlow.Core.IO;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MimFlow.Data.Sources.Layouts;

namespace MimFlow.Data.Sources;

/// <summary>One WebDataset sample as listed: a key group of a tar.</summary>
/// <param name="Key">The member names' shared stem: directory plus base name up to its first dot.</param>
/// <param name="Start">Byte offset of the group's first header (or of the damage, for a damage entry).</param>
/// <param name="Defect">Why the sample cannot be used (read as a refusal, so it is quarantined), else null.</param>
internal sealed record TarSample(string Key, long Start, TarMember? Image, TarMember? Annotation, int Label, string? Defect);

/// <summary>
/// WebDataset tar shards (<c>--layout wds</c>). Shards are chosen by <see cref="ShardSelection"/>. Members are grouped
/// into samples by key as WebDataset does: the member's directory plus its base name up to the first dot, extension
/// the rest (<c>a/b.seg.png</c>: key <c>a/b</c>, extension <c>seg.png</c>), consecutive members with one key forming
/// one sample.
/// <list type="bullet">
/// <item>image: the first member with extension <c>jpg</c>, <c>jpeg</c>, <c>png</c> or <c>webp</c> (any case) that is
/// not the label map;</item>
/// <item>label map (ADE20K-style segmentation): the member with extension <c>seg.png</c>; or a plain <c>png</c> when the
/// key also has a <c>jpg</c>/<c>jpeg</c>/<c>webp</c> image;</item>
/// <item>label: <c>cls</c> (a text integer), else the <c>label</c> number of <c>json</c>; none: unlabelled (-1).
/// Both are read during listing (at most 64 KiB each); every other member is only seeked over.</item>
/// </list>
/// Class names come from <c>classes.json</c> (a JSON array, or <c>{"classes": [...]}</c>) or <c>classes.txt</c> (one name a
/// line) in the shards' folder or its parent; without one, labelled data has classes named "0".."max label", label
/// maps the 150 ADE20K classes. Relative path (hence sample_id) of a sample: <c>&lt;tar path below the root&gt;/&lt;key&gt;</c>,
/// the tar's file name in the common case; no extension, so re-encoding the image keeps the id.
/// <para>
/// Broken samples become refusals read by the loader (quarantined, never a crash), each naming tar and key: a key
/// without an image member, an unparsable label, a label beyond the class names, a key repeated within a tar, a
/// member cut short by the end of the file. A tar damaged midway keeps its samples before the damage: damage inside a
/// member's contents is the refusal of that member's sample; damage at a header (partial, bad checksum) becomes an
/// entry of its own, <c>&lt;tar&gt;/@&lt;byte offset&gt;</c>, refused with the reason, so scan counts it. A file that
/// is not a tar at all is an error naming it.
/// </para>
/// </summary>
public static class WebDatasetSource
{
    public const string Extension = ".tar";
    public const string ClassesJson = "classes.json";
    public const string ClassesText = "classes.txt";

    /// <summary>Largest <c>cls</c> or <c>json</c> member read while listing.</summary>
    public const int MaxLabelMemberBytes = 64 << 10;

    private static readonly string[] ImageExtensions = ["jpg", "jpeg", "png", "webp"];

    public static SampleIndex Open(string data, DatasetSplit split)
    {
        var shards = ShardSelection.Select(data, Extension, split, "wds");
        var named = ReadClassesFile(shards.Root);
        var table = new PathTable();
        string[] names = shards.Files.Select(shards.RelativeName).ToArray();
        var store = new TarStore(shards.Files.ToArray(), names, table);
        for (int t = 0; t < shards.Files.Count; t++)
        {
            // Unbuffered: listing reads 512-byte headers and seeks over contents, so a read-ahead buffer would only
            // pull in image bytes nobody asked for.
            // Only a regular file is opened: a FIFO named x.tar would block the listing.
            using var stream = RegularFile.OpenRead(shards.Files[t], bufferSize: 0);
            foreach (var sample in ReadSamples(stream, names[t], shards.Files[t]))
                store.Add(t, sample);
        }
        IReadOnlyList<string> classes = named?.Names
            ?? (store.HasAnnotations ? Ade20kLayout.ClassNames
                : store.MaxLabel >= 0 ? Enumerable.Range(0, store.MaxLabel + 1).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList() : []);
        if (named is not null) store.RefuseLabelsBeyond(classes.Count, named.Value.File);
        return new SampleIndex(shards.Root, DatasetLayouts.Name(DatasetLayout.Wds), classes, store);
    }

    /// <summary>The samples of one tar in member order (see the class summary for the rules).</summary>
    /// <param name="path">The tar as errors name it (default: <paramref name="tarName"/>).</param>
    internal static IEnumerable<TarSample> ReadSamples(Stream stream, string tarName, string? path = null)
    {
        var listing = new TarListing(stream, path ?? tarName);
        var seenKeys = new HashSet<string>(StringComparer.Ordinal);
        Group? group = null;
        foreach (var member in listing.Members())
        {
            if (!SplitName(member.Name, out string key, out string extension)) continue;
            if (group is not null && group.Key != key)
            {
                yield return group.Finish(tarName, seenKeys);
                group = null;
            }
            group ??= new Group(key, member.HeaderOffset);
            group.Members.Add((extension, member));
            string lower = extension.ToLowerInvariant();
            if (lower is "cls" or "json" && member.DataOffset + member.Size <= listing.Length)
            {
                if (member.Size > MaxLabelMemberBytes) group.Defect ??= $"{key}.{extension} is {member.Size:N0} bytes, more than a label member may be ({MaxLabelMemberBytes:N0})";
                else if (lower == "cls") group.Cls ??= listing.ReadContents(member.DataOffset, (int)member.Size);
                else group.Json ??= listing.ReadContents(member.DataOffset, (int)member.Size);
            }
        }
        if (listing.Damage is { } damage)
        {
            string reason = $"{tarName} is damaged: {damage.Reason}";
            // Damage inside a member spoils its sample; damage between members leaves the samples before it whole and
            // is reported as an entry of its own.
            if (damage.InLastMember && group is not null) group.Defect = reason;
            else
            {
                if (group is not null) yield return group.Finish(tarName, seenKeys);
                group = null;
                yield return new TarSample($"@{damage.Offset}", damage.Offset, null, null, -1, reason);
            }
        }
        if (group is not null) yield return group.Finish(tarName, seenKeys);
    }

    /// <summary>WebDataset's key rule; false for names without an extension (or hidden, starting with a dot), which are ignored.</summary>
    private static bool SplitName(string name, out string key, out string extension)
    {
        int slash = name.LastIndexOf('/');
        int dot = name.IndexOf('.', slash + 1);
        key = extension = "";
        if (dot <= slash + 1 || dot == name.Length - 1) return false;
        key = name[..dot];
        extension = name[(dot + 1)..];
        return true;
    }

    private static (IReadOnlyList<string> Names, string File)? ReadClassesFile(string root)
    {
        foreach (string folder in new[] { root, Path.GetDirectoryName(root) }.OfType<string>())
        {
            string json = Path.Combine(folder, ClassesJson), text = Path.Combine(folder, ClassesText);
            if (File.Exists(json))
            {
                try
                {
                    using var document = JsonDocument.Parse(RegularFile.ReadAllText(json, DatasetSource.MaxListFileBytes));
                    var array = document.RootElement.ValueKind == JsonValueKind.Array ? document.RootElement
                        : document.RootElement.TryGetProperty("classes", out var inner) && inner.ValueKind == JsonValueKind.Array ? inner
                        : throw new InvalidDataException($"{json}: expected a JSON array of class names or {{\"classes\": [...]}}");
                    return (array.EnumerateArray().Select(e => e.GetString() ?? throw new InvalidDataException($"{json}: a class name is not a string")).ToList(), json);
                }
                catch (JsonException e)
                {
                    throw new InvalidDataException($"{json}: not valid JSON ({e.Message})", e);
                }
            }
            if (File.Exists(text))
                return (RegularFile.ReadAllText(text, DatasetSource.MaxListFileBytes).Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0).ToList(), text);
        }
        return null;
    }

    private sealed class Group(string key, long start)
    {
        public string Key { get; } = key;
        public List<(string Extension, TarMember Member)> Members { get; } = [];
        public byte[]? Cls { get; set; }
        public byte[]? Json { get; set; }
        public string? Defect { get; set; }

        public TarSample Finish(string tarName, HashSet<string> seenKeys)
        {
            TarMember? annotation = Find("seg.png");
            if (annotation is null && Members.Any(m => Is(m.Extension, "jpg", "jpeg", "webp"))) annotation = Find("png");
            TarMember? image = null;
            foreach (var (extension, member) in Members)
                if (Is(extension, ImageExtensions) && member != annotation)
                {
                    image = member;
                    break;
                }
            int label = -1;
            string? defect = Defect;
            if (!seenKeys.Add(Key)) defect ??= $"key {Key} appears twice in {tarName} (its members are not consecutive)";
            if (image is null)
                defect ??= $"no image member (.jpg, .jpeg, .png or .webp) for key {Key}; members: {string.Join(", ", Members.Select(m => Path.GetFileName(m.Member.Name)))}";
            if (defect is null && Cls is not null)
            {
                string text = Encoding.UTF8.GetString(Cls).Trim();
                if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out label))
                    defect = $"bad label in {Key}.cls: '{Truncate(text)}' is not an integer";
            }
            else if (defect is null && Json is not null)
            {
                try
                {
                    using var document = JsonDocument.Parse(Json);
                    if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("label", out var value))
                    {
                        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out label))
                            defect = $"bad label in {Key}.json: {Truncate(value.GetRawText())} is not an integer";
                    }
                }
                catch (JsonException e)
                {
                    defect = $"{Key}.json is not valid JSON ({e.Message})";
                }
            }
            if (defect is not null) label = -1;
            return new TarSample(Key, start, image, annotation, Math.Max(label, -1), defect);
        }

        private TarMember? Find(string extension)
        {
            foreach (var (e, member) in Members)
                if (string.Equals(e, extension, StringComparison.OrdinalIgnoreCase)) return member;
            return null;
        }

        private static bool Is(string extension, params string[] options) => options.Any(o => string.Equals(extension, o, StringComparison.OrdinalIgnoreCase));

        private static string Truncate(string text) => text.Length <= 40 ? text : text[..40] + "…";
    }
}

/// <summary>Samples stored as tar members: per sample its tar, image and label-map byte ranges, and any listing defect
/// (about 40 bytes a sample besides the path).</summary>
internal sealed class TarStore(string[] tars, string[] tarNames, PathTable table) : SampleStore
{
    private readonly List<int> tar = [];
    private readonly List<long> starts = [];
    private readonly List<long> imageOffsets = [];
    private readonly List<long> imageLengths = [];
    private readonly Dictionary<int, (long Offset, long Length, string Name)> annotations = [];
    private readonly Dictionary<int, string> defects = [];

    public int MaxLabel { get; private set; } = -1;

    public override int Count => table.Count;

    public override bool HasAnnotations => annotations.Count > 0;

    public void Add(int tarIndex, TarSample sample)
    {
        int index = table.Add($"{tarNames[tarIndex]}/{sample.Key}", sample.Label);
        tar.Add(tarIndex);
        starts.Add(sample.Start);
        imageOffsets.Add(sample.Image?.DataOffset ?? -1);
        imageLengths.Add(sample.Image?.Size ?? 0);
        if (sample.Annotation is { } annotation) annotations[index] = (annotation.DataOffset, annotation.Size, $"{tarNames[tarIndex]}/{annotation.Name}");
        if (sample.Defect is not null) defects[index] = sample.Defect;
        MaxLabel = Math.Max(MaxLabel, sample.Label);
    }

    /// <summary>With class names from a file: a label outside them is a refusal naming it.</summary>
    public void RefuseLabelsBeyond(int classes, string classesFile)
    {
        for (int i = 0; i < Count; i++)
        {
            int label = table.Label(i);
            if (label < classes || defects.ContainsKey(i)) continue;
            defects[i] = $"label {label} is outside the {classes} classes of {classesFile}";
            table.SetLabel(i, -1);
        }
    }

    public override string RelativePath(int index) => table.Path(index);

    public override int Label(int index) => table.Label(index);

    public override string? AnnotationPath(int index) => annotations.TryGetValue(index, out var a) ? a.Name : null;

    public override ByteSource Image(int index) =>
        defects.TryGetValue(index, out string? defect) ? new BrokenBytes(defect) : new FileRangeBytes(tars[tar[index]], imageOffsets[index], imageLengths[index]);

    public override ByteSource? Annotation(int index) =>
        annotations.TryGetValue(index, out var a) ? new FileRangeBytes(tars[tar[index]], a.Offset, a.Length) : null;

    public override string? Location(int index)
    {
        string name = tarNames[tar[index]];
        return $"{name}, key {table.Path(index)[(name.Length + 1)..]} at byte {starts[index]:N0}";
    }
}
