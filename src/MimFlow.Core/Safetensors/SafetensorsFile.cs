using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace MimFlow.Core.Safetensors;

/// <summary>
/// Reads a safetensors file (8-byte little-endian header length, a JSON header of name → {dtype, shape,
/// data_offsets} plus optional <c>__metadata__</c>, then the raw little-endian data) through a memory map, so large
/// checkpoints are never copied whole. The header is fully validated on open: known dtypes, byte lengths that match
/// the shapes, and offsets that cover the data section exactly, without holes or overlaps.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private const long MaxHeaderBytes = 100L << 20;

    private readonly MemoryMappedFile? map;
    private readonly MemoryMappedViewAccessor? view;
    private readonly byte* data;
    private readonly Dictionary<string, SafetensorsEntry> byName;

    private SafetensorsFile(string path)
    {
        Path = path;
        long length = new FileInfo(path).Length;
        if (length < 8) throw new SafetensorsFormatException(path, $"{length} bytes is shorter than the 8-byte header length");
        map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        pointer += view.PointerOffset;
        try
        {
            ulong headerLength = BitConverter.ToUInt64(new ReadOnlySpan<byte>(pointer, 8));
            if (headerLength > (ulong)Math.Min(length - 8, MaxHeaderBytes))
                throw new SafetensorsFormatException(path, $"header length {headerLength} exceeds the file ({length} bytes) or the 100 MiB limit");
            var header = new ReadOnlySpan<byte>(pointer + 8, (int)headerLength);
            DataLength = length - 8 - (long)headerLength;
            data = pointer + 8 + (long)headerLength;
            (Entries, Metadata) = ParseHeader(path, header, DataLength);
            byName = Entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
        }
        catch
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
            map.Dispose();
            throw;
        }
    }

    public string Path { get; }

    /// <summary>Tensors in data order.</summary>
    public IReadOnlyList<SafetensorsEntry> Entries { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public long DataLength { get; }

    public static SafetensorsFile Open(string path) => new(System.IO.Path.GetFullPath(path));

    public bool Contains(string name) => byName.ContainsKey(name);

    public SafetensorsEntry this[string name] =>
        byName.TryGetValue(name, out var entry) ? entry : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>The raw little-endian bytes of a tensor, valid until the file is disposed.</summary>
    public ReadOnlySpan<byte> Bytes(SafetensorsEntry entry)
    {
        if (!ReferenceEquals(byName.GetValueOrDefault(entry.Name), entry)) throw new ArgumentException($"{Path}: the entry '{entry.Name}' is not one of this file's");
        // A span addresses at most 2^31 − 1 bytes; larger tensors are refused here rather than cut short.
        if (entry.ByteLength > int.MaxValue)
            throw new InvalidDataException($"{Path}: tensor '{entry.Name}' has {entry.ByteLength:N0} bytes, more than MimFlow reads as one array (2 GiB)");
        return new(data + entry.Begin, (int)entry.ByteLength);
    }

    /// <summary>The tensor's values as float32, converting F16, BF16 and F64.</summary>
    public float[] ReadFloat32(string name)
    {
        var entry = this[name];
        var bytes = Bytes(entry);
        var result = new float[entry.ElementCount];
        switch (entry.DType)
        {
            case SafetensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(result);
                break;
            case SafetensorsDType.F16:
                var halves = MemoryMarshal.Cast<byte, Half>(bytes);
                for (int i = 0; i < result.Length; i++) result[i] = (float)halves[i];
                break;
            case SafetensorsDType.BF16:
                var raw = MemoryMarshal.Cast<byte, ushort>(bytes);
                for (int i = 0; i < result.Length; i++) result[i] = BitConverter.Int32BitsToSingle(raw[i] << 16);
                break;
            case SafetensorsDType.F64:
                var doubles = MemoryMarshal.Cast<byte, double>(bytes);
                for (int i = 0; i < result.Length; i++) result[i] = (float)doubles[i];
                break;
            default:
                throw new InvalidDataException($"{Path}: tensor '{name}' is {entry.DType}, not a floating-point type");
        }
        return result;
    }

    /// <summary>The tensor's values as an array of <typeparamref name="T"/>, whose size must match the dtype's.</summary>
    public T[] Read<T>(string name) where T : unmanaged
    {
        var entry = this[name];
        if (sizeof(T) != entry.DType.Size())
            throw new InvalidDataException($"{Path}: tensor '{name}' is {entry.DType} ({entry.DType.Size()} bytes a value), not {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(Bytes(entry)).ToArray();
    }

    private static (IReadOnlyList<SafetensorsEntry>, IReadOnlyDictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        JsonDocument document;
        try
        {
            // A key given twice (a tensor, or a field of one) would make the header mean two things: refused.
            document = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { AllowDuplicateProperties = false });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, $"the header is not JSON ({e.Message})");
        }
        try
        {
            return ParseDocument(path, document, dataLength);
        }
        catch (InvalidOperationException e)
        {
            // JsonDocument checks structure on parse but decodes strings only when read: bad UTF-8 surfaces here.
            throw new SafetensorsFormatException(path, $"the header is not valid UTF-8 JSON ({e.Message})");
        }
        finally
        {
            document.Dispose();
        }
    }

    private static (IReadOnlyList<SafetensorsEntry>, IReadOnlyDictionary<string, string>) ParseDocument(string path, JsonDocument document, long dataLength)
    {
        if (document.RootElement.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, "the header is not a JSON object");
        var entries = new List<SafetensorsEntry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                if (property.Value.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, "__metadata__ is not an object");
                foreach (var item in property.Value.EnumerateObject())
                {
                    if (item.Value.ValueKind != JsonValueKind.String)
                        throw new SafetensorsFormatException(path, $"__metadata__ value '{item.Name}' is not a string");
                    metadata[item.Name] = item.Value.GetString()!;
                }
                continue;
            }
            var entry = ParseEntry(path, property);
            if (!names.Add(entry.Name)) throw new SafetensorsFormatException(path, $"tensor '{entry.Name}' is listed twice");
            entries.Add(entry);
        }
        entries.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        long expected = 0;
        foreach (var entry in entries)
        {
            if (entry.Begin != expected)
                throw new SafetensorsFormatException(path, entry.Begin > expected
                    ? $"tensor '{entry.Name}' starts at {entry.Begin}, leaving a hole after byte {expected}"
                    : $"tensor '{entry.Name}' overlaps the previous tensor (starts at {entry.Begin}, before {expected})");
            expected = entry.End;
        }
        if (expected != dataLength)
            throw new SafetensorsFormatException(path, expected > dataLength
                ? $"offsets reach byte {expected} but the data section has {dataLength} bytes (truncated file?)"
                : $"the data section has {dataLength - expected} bytes no tensor covers");
        return (entries, metadata);
    }

    private static SafetensorsEntry ParseEntry(string path, JsonProperty property)
    {
        string name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object
            || !value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw new SafetensorsFormatException(path, $"tensor '{name}' needs dtype, shape and data_offsets [begin, end]");
        string dtypeText = dtypeElement.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeText, out var dtype)) throw new SafetensorsFormatException(path, $"tensor '{name}' has unknown dtype '{dtypeText}'");
        long[] shape = shapeElement.EnumerateArray().Select(d => d.TryGetInt64(out long v) && v >= 0 ? v : throw new SafetensorsFormatException(path, $"tensor '{name}' has a bad dimension {d}")).ToArray();
        long begin = offsetsElement[0].TryGetInt64(out long b) && b >= 0 ? b : throw new SafetensorsFormatException(path, $"tensor '{name}' has a bad begin offset");
        long end = offsetsElement[1].TryGetInt64(out long e) && e >= begin ? e : throw new SafetensorsFormatException(path, $"tensor '{name}' ends before it begins");
        var entry = new SafetensorsEntry(name, dtype, shape, begin, end);
        long bytes = SafetensorsSizes.ByteLength(shape, dtype)
            ?? throw new SafetensorsFormatException(path, $"tensor '{name}' of shape [{string.Join(", ", shape)}] {dtype}: its size overflows 64-bit arithmetic");
        if (bytes != entry.ByteLength)
            throw new SafetensorsFormatException(path, $"tensor '{name}' of shape [{string.Join(", ", shape)}] {dtype} needs {bytes} bytes, its offsets give {entry.ByteLength}");
        return entry;
    }

    public void Dispose()
    {
        if (view is not null)
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
        }
        map?.Dispose();
    }
}
