using System.Text;

namespace MimFlow.Data.Sources;

/// <summary>
/// What a <see cref="SampleIndex"/> stands on: per sample its relative path, label, the identity of its label map, and
/// where the bytes of both are. One implementation per storage form: loose files, WebDataset tars, Parquet rows.
/// </summary>
internal abstract class SampleStore
{
    public abstract int Count { get; }

    public abstract string RelativePath(int index);

    public abstract int Label(int index);

    /// <summary>The paired label map's identity (ADE20K), else null.</summary>
    public abstract string? AnnotationPath(int index);

    public abstract ByteSource Image(int index);

    public abstract ByteSource? Annotation(int index);

    /// <summary>Where the sample lies inside a container (tar and member offset, Parquet file and row), added to
    /// refusal reasons; null for loose files, whose relative path already says it.</summary>
    public virtual string? Location(int index) => null;

    /// <summary>True when samples carry label maps (segmentation data).</summary>
    public abstract bool HasAnnotations { get; }
}

/// <summary>
/// Relative paths in one UTF-8 buffer with offsets, and one int label each (about 60 bytes a sample for ImageNet
/// paths: 1.28 M samples take ~80 MB, not a million string objects). Grows geometrically while listing.
/// </summary>
internal sealed class PathTable
{
    private byte[] paths = new byte[1 << 16];
    private int[] offsets = new int[1025];
    private int[] labels = new int[1024];
    private int used;

    public int Count { get; private set; }

    public int Add(string relativePath, int label)
    {
        int length = Encoding.UTF8.GetByteCount(relativePath);
        if ((long)used + length > Array.MaxLength) throw new InvalidDataException($"the listing's paths exceed {Array.MaxLength:N0} bytes");
        if (used + length > paths.Length) Array.Resize(ref paths, (int)Math.Min(Array.MaxLength, Math.Max(2L * paths.Length, used + length)));
        if (Count + 1 >= labels.Length)
        {
            Array.Resize(ref labels, labels.Length * 2);
            Array.Resize(ref offsets, labels.Length + 1);
        }
        used += Encoding.UTF8.GetBytes(relativePath, paths.AsSpan(used));
        labels[Count] = label;
        offsets[++Count] = used;
        return Count - 1;
    }

    public string Path(int index) => Encoding.UTF8.GetString(paths, offsets[index], offsets[index + 1] - offsets[index]);

    public int Label(int index) => labels[index];

    public void SetLabel(int index, int label) => labels[index] = label;
}

/// <summary>Loose files below a root (ImageNet, ADE20K and plain folder layouts).</summary>
/// <param name="defects">Entries the listing refused (a folder link, an undecodable name, a missing annotation) by
/// position: reading them refuses them with the reason, so they are quarantined and counted.</param>
internal sealed class FolderStore(string root, PathTable table, Func<string, string?>? annotationFor, IReadOnlyDictionary<int, string> defects) : SampleStore
{
    public override int Count => table.Count;

    public override bool HasAnnotations => annotationFor is not null;

    public override string RelativePath(int index) => table.Path(index);

    public override int Label(int index) => table.Label(index);

    public override string? AnnotationPath(int index) => annotationFor?.Invoke(table.Path(index));

    public override ByteSource Image(int index) =>
        defects.TryGetValue(index, out string? defect) ? new BrokenBytes(defect) : new FileBytes(FullPath(table.Path(index)));

    public override ByteSource? Annotation(int index) =>
        defects.ContainsKey(index) ? null : AnnotationPath(index) is { } relative ? new FileBytes(FullPath(relative)) : null;

    private string FullPath(string relative) => System.IO.Path.Combine(root, relative.Replace('/', System.IO.Path.DirectorySeparatorChar));
}
