using static TorchSharp.torch;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>An element type of a PyTorch storage; <see cref="Scalar"/> is null for types that are recognised but not read (complex, quantised, float8).</summary>
internal sealed record TorchElementType(string Name, ScalarType? Scalar, int Size)
{
    /// <summary>By storage class (<c>torch.FloatStorage</c> …), as the persistent ids of torch.save name them.</summary>
    public static TorchElementType? OfStorageClass(string name) => name switch
    {
        "FloatStorage" => new("float32", ScalarType.Float32, 4),
        "HalfStorage" => new("float16", ScalarType.Float16, 2),
        "BFloat16Storage" => new("bfloat16", ScalarType.BFloat16, 2),
        "DoubleStorage" => new("float64", ScalarType.Float64, 8),
        "LongStorage" => new("int64", ScalarType.Int64, 8),
        "IntStorage" => new("int32", ScalarType.Int32, 4),
        "ShortStorage" => new("int16", ScalarType.Int16, 2),
        "CharStorage" => new("int8", ScalarType.Int8, 1),
        "ByteStorage" or "UntypedStorage" => new("uint8", ScalarType.Byte, 1),
        "BoolStorage" => new("bool", ScalarType.Bool, 1),
        "ComplexFloatStorage" => new("complex64", null, 8),
        "ComplexDoubleStorage" => new("complex128", null, 16),
        "QInt8Storage" or "QUInt8Storage" or "QUInt4x2Storage" or "QUInt2x4Storage" => new(name, null, 1),
        "QInt32Storage" => new(name, null, 4),
        _ => null,
    };

    /// <summary>By dtype name (<c>torch.float32</c> …), as <c>_rebuild_tensor_v3</c> passes it.</summary>
    public static TorchElementType? OfDType(string name) => name switch
    {
        "float32" or "float" => OfStorageClass("FloatStorage"),
        "float16" or "half" => OfStorageClass("HalfStorage"),
        "bfloat16" => OfStorageClass("BFloat16Storage"),
        "float64" or "double" => OfStorageClass("DoubleStorage"),
        "int64" or "long" => OfStorageClass("LongStorage"),
        "int32" or "int" => OfStorageClass("IntStorage"),
        "int16" or "short" => OfStorageClass("ShortStorage"),
        "int8" => OfStorageClass("CharStorage"),
        "uint8" => OfStorageClass("ByteStorage"),
        "bool" => OfStorageClass("BoolStorage"),
        "uint16" => new(name, null, 2),
        "uint32" => new(name, null, 4),
        "uint64" => new(name, null, 8),
        _ when name.StartsWith("float8", StringComparison.Ordinal) => new(name, null, 1),
        _ => null,
    };
}

/// <summary>
/// A storage a tensor refers to: its key (zip member <c>data/KEY</c>, or the legacy format's storage key), element
/// type and size as the persistent id declares them, and — for the legacy format's storage views — where the
/// view starts in the root storage.
/// </summary>
internal sealed record StorageReference(string Key, TorchElementType ElementType, long ElementCount, long ByteOffset = 0)
{
    public long ByteLength => checked(ElementCount * ElementType.Size);
}

/// <summary>
/// A tensor as torch.save describes it: a view (offset, sizes, strides in elements) into a storage. The view is
/// checked to lie inside the storage when it is made (overflow-safe), so reading it later cannot run past the data.
/// </summary>
internal sealed class TensorRecord
{
    private TensorRecord(StorageReference storage, TorchElementType elementType, long offset, long[] shape, long[] stride, long lastElement)
    {
        Storage = storage;
        ElementType = elementType;
        Offset = offset;
        Shape = shape;
        Stride = stride;
        LastElement = lastElement;
    }

    public StorageReference Storage { get; }

    public TorchElementType ElementType { get; }

    public long Offset { get; }

    public long[] Shape { get; }

    public long[] Stride { get; }

    /// <summary>The highest element index the view touches (−1 for an empty tensor).</summary>
    public long LastElement { get; }

    /// <summary>Checks the view against its storage; the reason is null when it fits.</summary>
    public static TensorRecord Create(StorageReference storage, TorchElementType elementType, long offset, long[] shape, long[] stride, out string? problem)
    {
        problem = Check(storage, elementType, offset, shape, stride, out long last);
        return new TensorRecord(storage, elementType, offset, shape, stride, last);
    }

    private static string? Check(StorageReference storage, TorchElementType elementType, long offset, long[] shape, long[] stride, out long last)
    {
        last = -1;
        if (shape.Length != stride.Length) return $"{shape.Length} sizes but {stride.Length} strides";
        if (offset < 0 || shape.Any(s => s < 0) || stride.Any(s => s < 0))
            return $"a negative offset, size or stride (offset {offset}, sizes [{string.Join(", ", shape)}], strides [{string.Join(", ", stride)}])";
        try
        {
            long elements = 1;
            foreach (long size in shape) elements = checked(elements * size);
            if (elements == 0) return null;
            long highest = offset;
            for (int i = 0; i < shape.Length; i++) highest = checked(highest + checked((shape[i] - 1) * stride[i]));
            long bytesNeeded = checked(checked(highest + 1) * elementType.Size);
            last = highest;
            return bytesNeeded > storage.ByteLength
                ? $"sizes [{string.Join(", ", shape)}], strides [{string.Join(", ", stride)}] at offset {offset} need {bytesNeeded} bytes of storage '{storage.Key}', which has {storage.ByteLength}"
                : null;
        }
        catch (OverflowException)
        {
            return $"sizes [{string.Join(", ", shape)}], strides [{string.Join(", ", stride)}] at offset {offset} overflow 64-bit arithmetic";
        }
    }
}

/// <summary>Where a checkpoint's storages lie: copies a byte range of a storage (the key's whole data, from its start).</summary>
internal interface IStorageSource
{
    void Copy(string key, long byteOffset, Span<byte> destination);
}

/// <summary>Turns a tensor record into a float32 CPU tensor, copying only the part of the storage the view covers.</summary>
internal static class TensorMaterializer
{
    // Copies go through spans, which address at most 2^31 − 1 bytes; larger extents are filled in chunks.
    private const long ChunkBytes = 1L << 30;

    public static Tensor ToFloat32(TensorRecord record, IStorageSource source, string origin, string name)
    {
        var type = record.ElementType;
        if (type.Scalar is not ScalarType scalar) throw new InvalidDataException($"{origin}: '{name}' is a {type.Name} tensor, which MimFlow does not read");
        if (record.LastElement < 0) return zeros(record.Shape, dtype: ScalarType.Float32);
        long first = record.Offset, count = record.LastElement - record.Offset + 1;
        // The view's lowest element is its offset (strides are non-negative), so [offset, last] covers it.
        using var buffer = empty([count], scalar);
        long byteStart = record.Storage.ByteOffset + first * type.Size, byteCount = count * type.Size;
        for (long done = 0; done < byteCount; done += ChunkBytes)
        {
            long chunk = Math.Min(ChunkBytes, byteCount - done);
            using var part = buffer.narrow(0, done / type.Size, chunk / type.Size);
            source.Copy(record.Storage.Key, byteStart + done, part.bytes);
        }
        using var view = buffer.as_strided(record.Shape, record.Stride, 0);
        return scalar == ScalarType.Float32 ? view.contiguous() : view.to(ScalarType.Float32);
    }
}
