using System.Text;

namespace MimFlow.Data.Masking;

/// <summary>Writes NumPy .npy files (format 1.0), readable by <c>numpy.load</c>.</summary>
public static class NpyWriter
{
    /// <summary>A C-ordered uint8 array of the given shape.</summary>
    public static void WriteUInt8(Stream stream, ReadOnlySpan<byte> data, params int[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != data.Length) throw new ArgumentException($"shape ({string.Join(", ", shape)}) holds {count} values, data has {data.Length}.");
        string shapeText = shape.Length == 1 ? $"({shape[0]},)" : $"({string.Join(", ", shape)})";
        string header = $"{{'descr': '|u1', 'fortran_order': False, 'shape': {shapeText}, }}";
        // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
        int unpadded = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - unpadded % 64) % 64) + "\n";
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        stream.Write(data);
    }
}
