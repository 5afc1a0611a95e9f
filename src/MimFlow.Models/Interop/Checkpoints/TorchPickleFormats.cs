using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>The object a torch.save / TorchScript file pickles, and where its storages' bytes are.</summary>
internal sealed record LoadedPickle(object? Root, IStorageSource Storages, string Format);

/// <summary>
/// torch.save's zip format (PyTorch 1.6+) and TorchScript archives: a zip whose single top folder holds
/// <c>data.pkl</c> (the object, tensors as persistent ids), <c>data/KEY</c> (one member per storage, raw
/// little-endian), <c>version</c>, and since PyTorch 2.1 <c>byteorder</c>. A TorchScript archive also holds
/// <c>code/</c> and <c>constants.pkl</c>; its <c>data.pkl</c> is the module object tree.
/// </summary>
internal static class TorchZipFormat
{
    /// <summary>Pickles are small next to storages; a larger one is taken for a damaged archive.</summary>
    private const long MaxPickleBytes = 1L << 30;

    public static LoadedPickle Load(MappedFile file, CancellationToken cancellationToken)
    {
        var members = ZipDirectory.Read(file);
        var pickles = members.Keys.Where(name => name.EndsWith("/data.pkl", StringComparison.Ordinal) && name.IndexOf('/') == name.Length - "/data.pkl".Length).ToList();
        if (pickles.Count != 1)
            throw new InvalidDataException(pickles.Count == 0
                ? $"{file.Path}: a zip archive, but not a PyTorch checkpoint: it has no <archive>/data.pkl"
                : $"{file.Path}: a zip archive with {pickles.Count} top-level data.pkl records ({string.Join(", ", pickles.Take(4))}); PyTorch writes one");
        string folder = pickles[0][..^"data.pkl".Length];
        if (members.TryGetValue(folder + "byteorder", out var byteOrder))
        {
            string order = Encoding.ASCII.GetString(ZipDirectory.ReadAll(file, byteOrder, 64)).Trim();
            if (order != "little")
                throw new InvalidDataException($"{file.Path}: refused to load: its tensors are stored {order}-endian (byteorder '{order}'); save the checkpoint on a little-endian machine");
        }
        bool torchScript = members.ContainsKey(folder + "constants.pkl") || members.Keys.Any(name => name.StartsWith(folder + "code/", StringComparison.Ordinal));
        var storages = new ZipStorages(file, members, folder);
        var unpickler = new SafeUnpickler(file.Path, storages.Resolve, cancellationToken);
        var (root, _) = unpickler.Load(ZipDirectory.ReadAll(file, members[pickles[0]], MaxPickleBytes));
        return new LoadedPickle(root, storages, torchScript ? "torchscript" : "pytorch-zip");
    }

    private sealed class ZipStorages(MappedFile file, IReadOnlyDictionary<string, ZipMember> members, string folder) : IStorageSource
    {
        private readonly Dictionary<(string, string), StorageReference> resolved = new();

        /// <summary>torch.save's persistent id: ('storage', storage class, key, location, element count).</summary>
        public object? Resolve(object? persistentId)
        {
            if (persistentId is not object?[] { Length: >= 5 } id || id[0] is not "storage")
                throw new InvalidDataException($"{file.Path}: not a valid checkpoint: a persistent id that is not a storage record ({AdmittedGlobals.Describe(persistentId)})");
            var type = StorageType(file.Path, id[1]);
            string key = id[2] as string ?? throw new InvalidDataException($"{file.Path}: not a valid checkpoint: a storage key that is not a string");
            long count = id[4] is long n && n >= 0 ? n : throw new InvalidDataException($"{file.Path}: not a valid checkpoint: storage '{key}' has no valid element count");
            if (resolved.TryGetValue((key, type.Name), out var known)) return known;
            if (!members.TryGetValue(folder + "data/" + key, out var member))
                throw new InvalidDataException($"{file.Path}: storage '{key}' is missing from the archive ({folder}data/{key})");
            var storage = new StorageReference(key, type, count);
            if (!FitsIn(storage, member.Size))
                throw new InvalidDataException($"{file.Path}: storage '{key}' declares {count} {type.Name} elements but {folder}data/{key} holds {member.Size} bytes");
            resolved[(key, type.Name)] = storage;
            return storage;
        }

        public void Copy(string key, long byteOffset, Span<byte> destination) => ZipDirectory.Copy(file, members[folder + "data/" + key], byteOffset, destination);
    }

    internal static TorchElementType StorageType(string path, object? storageClass) =>
        (storageClass is PickleGlobal { Module: "torch" or "torch.storage" } global ? TorchElementType.OfStorageClass(global.Name) : null)
        ?? throw new InvalidDataException($"{path}: not a valid checkpoint: unknown storage type {AdmittedGlobals.Describe(storageClass)}");

    internal static bool FitsIn(StorageReference storage, long availableBytes)
    {
        try
        {
            return checked(storage.ByteOffset + storage.ByteLength) <= availableBytes;
        }
        catch (OverflowException)
        {
            return false;
        }
    }
}

/// <summary>
/// torch.save's format before PyTorch 1.6 (<c>_use_new_zipfile_serialization=False</c>): five pickles in a row —
/// a magic number, the protocol version 1001, sys_info (byte order, type sizes), the object (tensors as persistent
/// ids naming a storage key), the sorted list of storage keys — then each storage in that order as an 8-byte
/// little-endian element count followed by its raw bytes. The storages' places are found by skipping over their
/// bytes, so nothing is read twice.
/// </summary>
internal static class TorchLegacyFormat
{
    private static readonly BigInteger MagicNumber = BigInteger.Parse("119547037146038801333356", System.Globalization.CultureInfo.InvariantCulture);
    private const long ProtocolVersion = 1001;

    /// <summary>Whether the file starts like a pickle (PROTO 0x80 then a protocol up to 5).</summary>
    public static bool LooksLikePickle(ReadOnlySpan<byte> head) => head.Length >= 2 && head[0] == 0x80 && head[1] <= 5;

    public static LoadedPickle Load(MappedFile file, CancellationToken cancellationToken)
    {
        long position = 0;
        object? Next(Func<object?, object?> persistentLoad)
        {
            var unpickler = new SafeUnpickler(file.Path, persistentLoad, cancellationToken);
            var (value, length) = unpickler.Load(file.Memory(position, (int)Math.Min(file.Length - position, int.MaxValue)));
            position += length;
            return value;
        }
        object? NoPersistentIds(object? id) => throw new InvalidDataException($"{file.Path}: not a valid checkpoint: a persistent id outside the object pickle");

        if (Next(NoPersistentIds) is not BigInteger magic || magic != MagicNumber)
            throw new InvalidDataException($"{file.Path}: a pickle, but not one torch.save wrote (no torch magic number first); MimFlow reads only checkpoints");
        if (Next(NoPersistentIds) is not long version || version != ProtocolVersion)
            throw new InvalidDataException($"{file.Path}: a legacy torch.save file of an unknown protocol version (1001 expected)");
        if (Next(NoPersistentIds) is PickleDict systemInfo && systemInfo["little_endian"] is false)
            throw new InvalidDataException($"{file.Path}: refused to load: its tensors are stored big-endian (sys_info little_endian False); save the checkpoint on a little-endian machine");

        var storages = new LegacyStorages(file);
        var root = Next(storages.Resolve);
        if (Next(NoPersistentIds) is not PickleList keys || keys.Any(k => k is not string))
            throw new InvalidDataException($"{file.Path}: not a valid checkpoint: the storage key list after the object is missing or malformed (truncated?)");
        storages.Locate([.. keys.Cast<string>()], position);
        return new LoadedPickle(root, storages, "pytorch-legacy");
    }

    private sealed class LegacyStorages(MappedFile file) : IStorageSource
    {
        private readonly Dictionary<string, TorchElementType> rootTypes = new(StringComparer.Ordinal);
        private readonly Dictionary<string, long> declaredCounts = new(StringComparer.Ordinal);
        private readonly List<StorageReference> references = [];
        private readonly Dictionary<string, (long Offset, long Length)> ranges = new(StringComparer.Ordinal);

        /// <summary>The legacy persistent id: ('storage', storage class, root key, location, root element count, view metadata or None).</summary>
        public object? Resolve(object? persistentId)
        {
            if (persistentId is not object?[] { Length: >= 5 } id || id[0] is not "storage")
                throw new InvalidDataException($"{file.Path}: not a valid checkpoint: a persistent id that is not a storage record ({AdmittedGlobals.Describe(persistentId)})");
            var type = TorchZipFormat.StorageType(file.Path, id[1]);
            string key = id[2] as string ?? throw new InvalidDataException($"{file.Path}: not a valid checkpoint: a storage key that is not a string");
            long count = id[4] is long n && n >= 0 ? n : throw new InvalidDataException($"{file.Path}: not a valid checkpoint: storage '{key}' has no valid element count");
            var rootType = rootTypes.TryAdd(key, type) ? type : rootTypes[key];
            declaredCounts[key] = Math.Max(declaredCounts.GetValueOrDefault(key), count);
            StorageReference storage;
            if (id.Length > 5 && id[5] is object?[] { Length: 3 } view && view[1] is long viewOffset && view[2] is long viewCount && viewOffset >= 0 && viewCount >= 0)
            {
                // Old PyTorch saved storage views: a window (in elements) of the root storage.
                if (viewOffset > count || viewCount > count - viewOffset)
                    throw new InvalidDataException($"{file.Path}: storage view '{view[0]}' ({viewCount} elements at {viewOffset}) lies outside storage '{key}' ({count} elements)");
                long byteOffset = viewOffset <= long.MaxValue / rootType.Size ? viewOffset * rootType.Size
                    : throw new InvalidDataException($"{file.Path}: storage view '{view[0]}' starts beyond any file");
                storage = new StorageReference(key, type, viewCount, byteOffset);
            }
            else storage = new StorageReference(key, type, count);
            references.Add(storage);
            return storage;
        }

        /// <summary>Walks the storage section: per key, an int64 element count, then that many elements.</summary>
        public void Locate(IReadOnlyList<string> keys, long position)
        {
            foreach (string key in keys)
            {
                if (!rootTypes.TryGetValue(key, out var type))
                    throw new InvalidDataException($"{file.Path}: not a valid checkpoint: storage '{key}' is listed but no tensor uses it");
                if (!file.Contains(position, 8)) throw Truncated(key);
                long count = BinaryPrimitives.ReadInt64LittleEndian(file.Span(position, 8));
                long length;
                try
                {
                    length = count >= 0 ? checked(count * type.Size) : throw new OverflowException();
                }
                catch (OverflowException)
                {
                    throw new InvalidDataException($"{file.Path}: not a valid checkpoint: storage '{key}' claims {count} elements");
                }
                if (!file.Contains(position + 8, length)) throw Truncated(key);
                ranges[key] = (position + 8, length);
                position += 8 + length;
            }
            foreach (var storage in references)
            {
                if (!ranges.TryGetValue(storage.Key, out var range))
                    throw new InvalidDataException($"{file.Path}: storage '{storage.Key}' is missing from the file's storage section");
                if (!TorchZipFormat.FitsIn(storage, range.Length) || !TorchZipFormat.FitsIn(new StorageReference(storage.Key, rootTypes[storage.Key], declaredCounts[storage.Key]), range.Length))
                    throw new InvalidDataException($"{file.Path}: storage '{storage.Key}' holds {range.Length} bytes, fewer than its tensors declare");
            }
        }

        private InvalidDataException Truncated(string key) => new($"{file.Path}: the storage section ends inside storage '{key}' (a truncated file)");

        public void Copy(string key, long byteOffset, Span<byte> destination)
        {
            var (offset, length) = ranges[key];
            if (byteOffset < 0 || byteOffset > length || destination.Length > length - byteOffset)
                throw new InvalidDataException($"{file.Path}: bytes {byteOffset}..{byteOffset + destination.Length} of storage '{key}' ({length} bytes) were asked for");
            file.Span(offset + byteOffset, destination.Length).CopyTo(destination);
        }
    }
}
