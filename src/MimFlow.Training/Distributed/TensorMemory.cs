using static TorchSharp.torch;

namespace MimFlow.Training.Distributed;

/// <summary>Where a tensor's elements start (host or device address): TorchSharp exposes its storage's data_ptr and the
/// tensor's storage offset, not the tensor's own pointer.</summary>
internal static class TensorMemory
{
    public static IntPtr Address(Tensor tensor)
    {
        if (!tensor.is_contiguous()) throw new ArgumentException("a collective needs a contiguous tensor", nameof(tensor));
        long elementSize = tensor.element_size();
        IntPtr start = tensor.dtype switch
        {
            ScalarType.Float32 => StorageStart<float>(tensor),
            ScalarType.Float64 => StorageStart<double>(tensor),
            ScalarType.Byte => StorageStart<byte>(tensor),
            _ => throw new NotSupportedException($"the collectives carry float32, float64 and byte tensors, not {tensor.dtype}"),
        };
        return start + (nint)(tensor.storage_offset() * elementSize);
    }

    private static IntPtr StorageStart<T>(Tensor tensor) where T : unmanaged
    {
        using var storage = tensor.storage<T>();
        return storage.data_ptr();
    }
}
