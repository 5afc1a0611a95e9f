using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;

namespace MimFlow.Data.Sources;

/// <summary>
/// The listing of a dataset in its deterministic order, whatever its storage: loose files, WebDataset tars or Hugging
/// Face Parquet files. <see cref="Sample"/> objects are made on demand; the bytes of a sample are read through
/// <see cref="ReadImageAsync(Sample, CancellationToken)"/> and <see cref="ReadAnnotationAsync(Sample, CancellationToken)"/>
/// (bounded, retried, size-limited: a missing, oversized or damaged input is a <see cref="BadImageException"/>).
/// Thread-safe for reading.
/// </summary>
public sealed class SampleIndex
{
    private readonly SampleStore store;
    private readonly Lazy<IdTable> ids;
    private readonly SampleReader defaultReader = new(retries: 3, DecodeLimits.Default);

    internal SampleIndex(string root, string layout, IReadOnlyList<string> classes, SampleStore store)
    {
        Root = root;
        Layout = layout;
        Classes = classes;
        this.store = store;
        ids = new Lazy<IdTable>(() => IdTable.Build(store), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The dataset root: the folder of a folder layout, the folder holding the tar or Parquet files.</summary>
    public string Root { get; }

    /// <summary>The storage under this listing (tests look at its caches).</summary>
    internal SampleStore Store => store;

    /// <summary>imagenet, ade20k, folder, wds or hf-parquet.</summary>
    public string Layout { get; }

    /// <summary>Class names in class-index order (ImageNet wnids, ADE20K names); empty when unlabelled.</summary>
    public IReadOnlyList<string> Classes { get; }

    public int Count => store.Count;

    /// <summary>True when the samples carry label maps (ADE20K in any storage form): data for segmentation.</summary>
    public bool HasAnnotations => store.HasAnnotations;

    public Sample this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            return new Sample(index, store.RelativePath(index), store.Label(index), store.AnnotationPath(index));
        }
    }

    /// <summary>Samples with a class label (not -1).</summary>
    public int CountLabelled()
    {
        int labelled = 0;
        for (int i = 0; i < Count; i++)
            if (store.Label(i) >= 0) labelled++;
        return labelled;
    }

    public IEnumerable<Sample> All()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }

    /// <summary>
    /// The encoded image of <paramref name="sample"/> (a sample of this index), read with 3 retries of transient IO
    /// errors and the default size limit. Usable anywhere, outside the loader's graph too (replaying views from the
    /// originals). The array is the caller's own.
    /// </summary>
    /// <exception cref="BadImageException">Missing, unreadable, oversized or damaged; the reason names the file, and for
    /// archives the member or row.</exception>
    public ValueTask<byte[]> ReadImageAsync(Sample sample, CancellationToken cancellationToken = default) =>
        ReadImageAsync(sample, defaultReader, cancellationToken);

    /// <summary>As <see cref="ReadImageAsync(Sample, CancellationToken)"/>, with the caller's retries and limits.</summary>
    public async ValueTask<byte[]> ReadImageAsync(Sample sample, SampleReader reader, CancellationToken cancellationToken)
    {
        var source = store.Image(Own(sample));
        try
        {
            return await reader.ReadAsync(source, cancellationToken);
        }
        catch (BadImageException e)
        {
            throw new BadImageException(Located(sample, e.Reason), e);
        }
    }

    /// <summary>The encoded label map of <paramref name="sample"/> (ADE20K), or null when it has none.</summary>
    public ValueTask<byte[]?> ReadAnnotationAsync(Sample sample, CancellationToken cancellationToken = default) =>
        ReadAnnotationAsync(sample, defaultReader, cancellationToken);

    public async ValueTask<byte[]?> ReadAnnotationAsync(Sample sample, SampleReader reader, CancellationToken cancellationToken)
    {
        if (store.Annotation(Own(sample)) is not { } source) return null;
        try
        {
            return await reader.ReadAsync(source, cancellationToken);
        }
        catch (BadImageException e)
        {
            string name = sample.AnnotationRelativePath is { } path ? path[(path.LastIndexOf('/') + 1)..] : "annotation";
            throw new BadImageException(Located(sample, $"annotation {name}: {e.Reason}"), e);
        }
    }

    /// <summary><paramref name="reason"/> with the sample's place inside its container (tar member, Parquet row) appended,
    /// so a quarantine line names the shard and the key or row; unchanged for loose files.</summary>
    public string Located(Sample sample, string reason) =>
        store.Location(sample.Index) is { } where ? $"{reason} [{where}]" : reason;

    /// <summary>
    /// The sample whose relative path is <paramref name="relativePath"/> ('/'-separated, as <see cref="Sample.RelativePath"/>).
    /// The first call builds a table of 12 bytes a sample (sorted 64-bit sample ids and positions; 15 MB for 1.28 M
    /// samples); each look-up is then a binary search.
    /// </summary>
    public bool TryFind(string relativePath, out Sample sample)
    {
        relativePath = relativePath.Replace('\\', '/');
        var table = ids.Value;
        foreach (int candidate in table.Candidates(SampleKey(relativePath)))
        {
            if (store.RelativePath(candidate) != relativePath) continue;
            sample = this[candidate];
            return true;
        }
        sample = null!;
        return false;
    }

    /// <summary>The sample whose <see cref="SampleId"/> (16 hex digits, as the shards' <c>sample_id</c>) is <paramref name="sampleId"/>.</summary>
    public bool TryFindById(string sampleId, out Sample sample)
    {
        sample = null!;
        if (sampleId.Length != 16 || !ulong.TryParse(sampleId, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong key)) return false;
        foreach (int candidate in ids.Value.Candidates(key))
        {
            sample = this[candidate];
            return true;
        }
        return false;
    }

    /// <summary>sample_id: 16 hex digits (lower case) of SHA-256 over the '/'-separated relative path, UTF-8.</summary>
    public static string SampleId(string relativePath) => SampleKey(relativePath).ToString("x16", CultureInfo.InvariantCulture);

    /// <summary>The first 8 bytes of the sample id's hash, big-endian: the id as a number.</summary>
    public static ulong SampleKey(string relativePath)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(relativePath.Replace('\\', '/')), hash);
        return BinaryPrimitives.ReadUInt64BigEndian(hash);
    }

    /// <summary>The sample's position, checked to be this index's sample (a sample of another listing would read the
    /// wrong bytes silently).</summary>
    private int Own(Sample sample)
    {
        if (sample.Index < 0 || sample.Index >= Count || store.RelativePath(sample.Index) != sample.RelativePath)
            throw new ArgumentException($"{sample.RelativePath} (#{sample.Index}) is not a sample of this listing of {Root}", nameof(sample));
        return sample.Index;
    }

    /// <summary>Sample keys sorted, with the position of each; equal keys (a 64-bit collision) sit side by side.</summary>
    private sealed class IdTable(ulong[] keys, int[] positions)
    {
        public static IdTable Build(SampleStore store)
        {
            var keys = new ulong[store.Count];
            var positions = new int[store.Count];
            Parallel.For(0, store.Count, i =>
            {
                keys[i] = SampleKey(store.RelativePath(i));
                positions[i] = i;
            });
            Array.Sort(keys, positions);
            return new IdTable(keys, positions);
        }

        public IEnumerable<int> Candidates(ulong key)
        {
            int at = Array.BinarySearch(keys, key);
            if (at < 0) yield break;
            while (at > 0 && keys[at - 1] == key) at--;
            for (; at < keys.Length && keys[at] == key; at++) yield return positions[at];
        }
    }
}
