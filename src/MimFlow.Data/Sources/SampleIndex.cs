using System.Text;

namespace MimFlow.Data.Sources;

/// <summary>
/// The listing of a dataset, stored compactly: all relative paths in one UTF-8 buffer with offsets, and one int
/// label each (about 60 bytes a sample for ImageNet paths: 1.28 M samples take ~80 MB, not a million objects).
/// <see cref="Sample"/> objects are made on demand.
/// </summary>
public sealed class SampleIndex
{
    private readonly byte[] paths;
    private readonly int[] offsets;
    private readonly int[] labels;
    private readonly Func<string, string?>? annotationFor;

    internal SampleIndex(string root, string layout, IReadOnlyList<string> classes, byte[] paths, int[] offsets, int[] labels, int count, Func<string, string?>? annotationFor)
    {
        Root = root;
        Layout = layout;
        Classes = classes;
        this.paths = paths;
        this.offsets = offsets;
        this.labels = labels;
        Count = count;
        this.annotationFor = annotationFor;
    }

    public string Root { get; }
    public string Layout { get; }

    /// <summary>Class names in class-index order (ImageNet wnids, ADE20K names); empty when unlabelled.</summary>
    public IReadOnlyList<string> Classes { get; }

    public int Count { get; }

    public Sample this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            string relative = Encoding.UTF8.GetString(paths, offsets[index], offsets[index + 1] - offsets[index]);
            return new Sample(index, relative, labels[index], annotationFor?.Invoke(relative));
        }
    }

    public string FullPath(Sample sample) => Path.Combine(Root, sample.RelativePath.Replace('/', Path.DirectorySeparatorChar));

    private (ulong Key, int Index)[]? byPath;

    /// <summary>
    /// The sample with this relative path. The first call sorts one 64-bit key per sample (12 bytes each: 15 MB for
    /// ImageNet-1k), so lookups by path cost no per-sample strings.
    /// </summary>
    public bool TryFind(string relativePath, out Sample sample)
    {
        var keys = byPath ??= BuildPathKeys();
        ulong key = PathKey(relativePath);
        int at = Array.BinarySearch(keys, (key, -1), PathKeyComparer.Instance);
        if (at < 0) at = ~at;
        for (; at < keys.Length && keys[at].Key == key; at++)
        {
            var candidate = this[keys[at].Index];
            if (candidate.RelativePath == relativePath)
            {
                sample = candidate;
                return true;
            }
        }
        sample = null!;
        return false;
    }

    /// <summary>The sample's encoded image.</summary>
    public byte[] ReadImage(Sample sample) => File.ReadAllBytes(FullPath(sample));

    private (ulong Key, int Index)[] BuildPathKeys()
    {
        var keys = new (ulong Key, int Index)[Count];
        for (int i = 0; i < Count; i++) keys[i] = (PathKey(Encoding.UTF8.GetString(paths, offsets[i], offsets[i + 1] - offsets[i])), i);
        Array.Sort(keys, PathKeyComparer.Instance);
        return keys;
    }

    private static ulong PathKey(string relativePath) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(relativePath)));

    private sealed class PathKeyComparer : IComparer<(ulong Key, int Index)>
    {
        public static PathKeyComparer Instance { get; } = new();
        public int Compare((ulong Key, int Index) x, (ulong Key, int Index) y) => x.Key != y.Key ? x.Key.CompareTo(y.Key) : x.Index.CompareTo(y.Index);
    }

    public IEnumerable<Sample> All()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }

    /// <summary>Appends samples in order; grows its buffers geometrically.</summary>
    internal sealed class Builder(string root, string layout, IReadOnlyList<string> classes, Func<string, string?>? annotationFor)
    {
        private byte[] paths = new byte[1 << 16];
        private int[] offsets = new int[1025];
        private int[] labels = new int[1024];
        private int count;
        private int used;

        public void Add(string relativePath, int label)
        {
            int length = Encoding.UTF8.GetByteCount(relativePath);
            if (used + length > paths.Length) Array.Resize(ref paths, Math.Max(paths.Length * 2, used + length));
            if (count + 1 >= labels.Length)
            {
                Array.Resize(ref labels, labels.Length * 2);
                Array.Resize(ref offsets, labels.Length + 1);
            }
            used += Encoding.UTF8.GetBytes(relativePath, paths.AsSpan(used));
            labels[count] = label;
            offsets[++count] = used;
        }

        public SampleIndex Build() => new(root, layout, classes, paths, offsets, labels, count, annotationFor);
    }
}
