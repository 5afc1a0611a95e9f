using System.Text;
using MimFlow.Core.Safetensors;

namespace MimFlow.Tests.Core;

/// <summary>Shapes whose element or byte counts do not fit 64 bits are refused, never wrapped around to a small size.</summary>
public sealed class SafetensorsOverflowTests
{
    private static string Write(TemporaryDirectory dir, string header, int dataBytes)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        string path = dir.Combine("file.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. new byte[dataBytes]]);
        return path;
    }

    [Theory]
    // 2^32 · 2^32 · 16 elements wraps to 0 in 64-bit arithmetic, so "needs 0 bytes" matched an empty range.
    [InlineData("[4294967296, 4294967296, 16]", "F32", 0)]
    [InlineData("[4611686018427387904, 4]", "F32", 0)]
    // The element count fits, the byte count (× 8) does not.
    [InlineData("[2305843009213693952, 1]", "F64", 0)]
    [InlineData("[4294967296, 4294967297]", "U8", 0)]
    public void A_shape_whose_size_overflows_is_refused_naming_the_file(string shape, string dtype, int dataBytes)
    {
        using var dir = new TemporaryDirectory();
        string path = Write(dir, $"{{\"t\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[0,{dataBytes}]}}}}", dataBytes);
        var error = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(path, error.Message);
        Assert.Contains("'t'", error.Reason);
        Assert.Contains("overflow", error.Reason);
    }

    [Fact]
    public void An_empty_tensor_with_a_huge_dimension_is_still_valid()
    {
        using var dir = new TemporaryDirectory();
        string path = Write(dir, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904, 0],\"data_offsets\":[0,0]}}", 0);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(0, file["t"].ElementCount);
        Assert.Empty(file.ReadFloat32("t"));
    }

    [Fact]
    public void The_writer_refuses_a_shape_whose_size_overflows()
    {
        var writer = new SafetensorsWriter();
        var error = Assert.Throws<ArgumentException>(() => writer.AddFloat32("t", [1L << 32, 1L << 32, 16], []));
        Assert.Contains("'t'", error.Message);
        Assert.Contains("overflow", error.Message);
        Assert.Throws<ArgumentException>(() => writer.AddFloat32("negative", [-1, -4], new float[4]));
    }

    [Fact]
    public void The_element_count_of_an_entry_is_checked()
    {
        var entry = new SafetensorsEntry("t", SafetensorsDType.F32, [1L << 32, 1L << 32, 16], 0, 0);
        Assert.Throws<OverflowException>(() => entry.ElementCount);
    }
}
