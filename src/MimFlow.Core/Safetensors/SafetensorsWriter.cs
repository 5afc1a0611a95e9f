using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using MimFlow.Core.IO;

namespace MimFlow.Core.Safetensors;

/// <summary>
/// Writes safetensors files as the reference implementation does: tensors ordered by dtype (larger first) then
/// name, compact JSON header with <c>__metadata__</c> first, padded with spaces to a multiple of 8 bytes, data
/// contiguous. The file appears under its name only when complete (atomic rename).
/// </summary>
public sealed class SafetensorsWriter
{
    private readonly List<(string Name, SafetensorsDType DType, long[] Shape, byte[] Data)> tensors = [];

    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);

    public SafetensorsWriter Add(string name, SafetensorsDType dtype, long[] shape, ReadOnlySpan<byte> data)
    {
        if (name == "__metadata__") throw new ArgumentException("'__metadata__' is reserved for metadata.");
        if (tensors.Any(t => t.Name == name)) throw new ArgumentException($"tensor '{name}' was added twice.");
        if (shape.Any(d => d < 0)) throw new ArgumentException($"tensor '{name}' has a negative dimension in shape [{string.Join(", ", shape)}].");
        long expected = SafetensorsSizes.ByteLength(shape, dtype)
            ?? throw new ArgumentException($"tensor '{name}' of shape [{string.Join(", ", shape)}] {dtype}: its size overflows 64-bit arithmetic.");
        if (expected != data.Length) throw new ArgumentException($"tensor '{name}' of shape [{string.Join(", ", shape)}] {dtype} needs {expected} bytes, got {data.Length}.");
        tensors.Add((name, dtype, shape.ToArray(), data.ToArray()));
        return this;
    }

    public SafetensorsWriter Add<T>(string name, SafetensorsDType dtype, long[] shape, ReadOnlySpan<T> values) where T : unmanaged =>
        Add(name, dtype, shape, MemoryMarshal.AsBytes(values));

    public SafetensorsWriter AddFloat32(string name, long[] shape, ReadOnlySpan<float> values) => Add(name, SafetensorsDType.F32, shape, values);

    public void Write(string path)
    {
        var ordered = tensors.OrderByDescending(t => t.DType.WriteRank()).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        byte[] header = Header(ordered);
        AtomicFile.Write(path, temporary =>
        {
            using var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write);
            stream.Write(BitConverter.GetBytes((ulong)header.Length));
            stream.Write(header);
            foreach (var tensor in ordered) stream.Write(tensor.Data);
        });
    }

    private byte[] Header(IReadOnlyList<(string Name, SafetensorsDType DType, long[] Shape, byte[] Data)> ordered)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (Metadata.Count > 0)
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in Metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in ordered)
            {
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", tensor.DType.ToString());
                json.WriteStartArray("shape");
                foreach (long dimension in tensor.Shape) json.WriteNumberValue(dimension);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset += tensor.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padding = (int)((8 - buffer.Length % 8) % 8);
        buffer.Write(Encoding.ASCII.GetBytes(new string(' ', padding)));
        return buffer.ToArray();
    }
}
