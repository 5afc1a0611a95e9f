namespace MimFlow.Core.Safetensors;

/// <summary>Element types of the safetensors format, named as in its header.</summary>
public enum SafetensorsDType { BOOL, U8, I8, I16, F16, BF16, I32, F32, F64, I64 }

public static class SafetensorsDTypes
{
    public static int Size(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL or SafetensorsDType.U8 or SafetensorsDType.I8 => 1,
        SafetensorsDType.I16 or SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.I32 or SafetensorsDType.F32 => 4,
        _ => 8,
    };

    public static bool TryParse(string text, out SafetensorsDType dtype) =>
        Enum.TryParse(text, ignoreCase: false, out dtype) && Enum.IsDefined(dtype) && text == dtype.ToString();

    /// <summary>The order the reference implementation writes tensors in: larger alignment first, then by name.</summary>
    internal static int WriteRank(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL => 0,
        SafetensorsDType.U8 => 1,
        SafetensorsDType.I8 => 2,
        SafetensorsDType.I16 => 5,
        SafetensorsDType.F16 => 7,
        SafetensorsDType.BF16 => 8,
        SafetensorsDType.I32 => 9,
        SafetensorsDType.F32 => 11,
        SafetensorsDType.F64 => 12,
        _ => 13,
    };
}

/// <summary>One tensor's entry in the header: element type, shape and byte range within the data section.</summary>
public sealed record SafetensorsEntry(string Name, SafetensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>The product of the dimensions; an OverflowException where it does not fit 64 bits (files never get that far: the reader refuses them).</summary>
    public long ElementCount => SafetensorsSizes.ElementCount(Shape);

    public long ByteLength => End - Begin;
}

/// <summary>Sizes of shapes in checked arithmetic: a product that wraps around would make a huge tensor look small.</summary>
public static class SafetensorsSizes
{
    /// <summary>The number of elements of <paramref name="shape"/>; OverflowException past 64 bits, ArgumentException for a negative dimension.</summary>
    public static long ElementCount(IReadOnlyList<long> shape)
    {
        long count = 1;
        foreach (long dimension in shape)
        {
            if (dimension < 0) throw new ArgumentException($"negative dimension {dimension} in shape [{string.Join(", ", shape)}]");
            count = checked(count * dimension);
        }
        return count;
    }

    /// <summary>The bytes of a tensor of <paramref name="shape"/> and <paramref name="dtype"/>, or null where that does not fit 64 bits.</summary>
    public static long? ByteLength(IReadOnlyList<long> shape, SafetensorsDType dtype)
    {
        try
        {
            return checked(ElementCount(shape) * dtype.Size());
        }
        catch (OverflowException)
        {
            return null;
        }
    }
}

/// <summary>
/// A malformed file: <see cref="Reason"/> says what is wrong, the message names the file too. (InvalidDataException is
/// sealed; readers that refuse damaged model files as InvalidDataException wrap this one.)
/// </summary>
public sealed class SafetensorsFormatException(string path, string reason) : Exception($"{path}: not a valid safetensors file: {reason}")
{
    public string Path { get; } = path;
    public string Reason { get; } = reason;
}
