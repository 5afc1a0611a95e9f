using System.Text;
using MimFlow.Core.Safetensors;

namespace MimFlow.Tests.Core;

public sealed class SafetensorsTests
{
    [Fact]
    public void Reads_the_timm_fixtures_written_by_pytorch()
    {
        using var weights = SafetensorsFile.Open(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "weights.safetensors"));
        Assert.Equal(55, weights.Entries.Count);
        var qkv = weights["blocks.0.attn.qkv.weight"];
        Assert.Equal(SafetensorsDType.F32, qkv.DType);
        Assert.Equal(new long[] { 576, 192 }, qkv.Shape);
        Assert.All(weights.ReadFloat32("blocks.0.attn.qkv.weight"), v => Assert.True(float.IsFinite(v)));

        using var input = SafetensorsFile.Open(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "input.safetensors"));
        Assert.Equal(new long[] { 2, 3, 224, 224 }, input["pixel_values"].Shape);
        using var expected = SafetensorsFile.Open(SharedFixtures.PathOf("timm", "beit_tiny_relpos", "expected.safetensors"));
        Assert.Equal(new long[] { 2, 197, 192 }, expected["features"].Shape);
        Assert.Equal(20, expected.ReadFloat32("logits").Length);
    }

    [Theory]
    [InlineData("beit_tiny_relpos")]
    [InlineData("vit_clip_tiny")]
    public void Rewriting_a_reference_file_reproduces_it_byte_for_byte(string fixture)
    {
        string original = SharedFixtures.PathOf("timm", fixture, "weights.safetensors");
        using var file = SafetensorsFile.Open(original);
        var writer = new SafetensorsWriter();
        foreach (var entry in file.Entries) writer.Add(entry.Name, entry.DType, entry.Shape, file.Bytes(entry));
        using var dir = new TemporaryDirectory();
        string copy = dir.Combine("copy.safetensors");
        writer.Write(copy);
        Assert.Equal(File.ReadAllBytes(original), File.ReadAllBytes(copy));
    }

    [Fact]
    public void Every_dtype_and_the_metadata_round_trip()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("all.safetensors");
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "pt";
        writer.Metadata["note"] = "ünïcode";
        writer.AddFloat32("f32", [2, 2], [1.5f, -2f, 0f, 3.25f]);
        writer.Add<Half>("f16", SafetensorsDType.F16, [3], [(Half)0.5f, (Half)(-1f), (Half)2f]);
        writer.Add<ushort>("bf16", SafetensorsDType.BF16, [2], [(ushort)(BitConverter.SingleToInt32Bits(1.0f) >> 16), (ushort)(BitConverter.SingleToInt32Bits(-3.0f) >> 16)]);
        writer.Add<long>("i64", SafetensorsDType.I64, [2], [long.MaxValue, -7L]);
        writer.Add<int>("i32", SafetensorsDType.I32, [1, 2], [42, -1]);
        writer.Add<byte>("u8", SafetensorsDType.U8, [3], [0, 128, 255]);
        writer.Add<byte>("bool", SafetensorsDType.BOOL, [2], [1, 0]);
        writer.Add<double>("f64", SafetensorsDType.F64, [0], []);
        writer.Write(path);

        byte[] raw = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(raw, 0);
        Assert.Equal(0, headerLength % 8);
        Assert.StartsWith("{\"__metadata__\":{\"format\":\"pt\"", Encoding.UTF8.GetString(raw, 8, (int)headerLength));

        using var file = SafetensorsFile.Open(path);
        Assert.Equal("ünïcode", file.Metadata["note"]);
        Assert.Equal([1.5f, -2f, 0f, 3.25f], file.ReadFloat32("f32"));
        Assert.Equal([0.5f, -1f, 2f], file.ReadFloat32("f16"));
        Assert.Equal([1f, -3f], file.ReadFloat32("bf16"));
        Assert.Equal([long.MaxValue, -7L], file.Read<long>("i64"));
        Assert.Equal([42, -1], file.Read<int>("i32"));
        Assert.Equal(new byte[] { 0, 128, 255 }, file.Read<byte>("u8"));
        Assert.Equal(new byte[] { 1, 0 }, file.Read<byte>("bool"));
        Assert.Empty(file.ReadFloat32("f64"));
        Assert.Throws<InvalidDataException>(() => file.Read<int>("i64"));
        Assert.Contains("no tensor named 'missing'", Assert.Throws<KeyNotFoundException>(() => file["missing"]).Message);
    }

    private static byte[] FileWith(string header, int dataBytes)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        return [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. new byte[dataBytes]];
    }

    [Theory]
    [InlineData("short", "shorter than the 8-byte header length")]
    [InlineData("huge-header", "exceeds the file")]
    [InlineData("not-json", "not JSON")]
    [InlineData("array", "not a JSON object")]
    [InlineData("unknown-dtype", "unknown dtype 'Q8'")]
    [InlineData("missing-field", "needs dtype, shape and data_offsets")]
    [InlineData("truncated", "truncated file?")]
    [InlineData("hole", "leaving a hole")]
    [InlineData("overlap", "overlaps")]
    [InlineData("size-mismatch", "needs 16 bytes, its offsets give 12")]
    [InlineData("leftover", "no tensor covers")]
    [InlineData("bad-metadata", "is not a string")]
    public void Malformed_files_are_refused_with_the_path_and_reason(string kind, string reason)
    {
        byte[] bytes = kind switch
        {
            "short" => [1, 2, 3],
            "huge-header" => [.. BitConverter.GetBytes(1_000_000UL), .. "{}"u8.ToArray()],
            "not-json" => FileWith("{\"a\":", 0),
            "array" => FileWith("[1,2]", 0),
            "unknown-dtype" => FileWith("{\"a\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
            "missing-field" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
            "truncated" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
            "hole" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
            "overlap" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
            "size-mismatch" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 12),
            "leftover" => FileWith("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8),
            _ => FileWith("{\"__metadata__\":{\"k\":1}}", 0),
        };
        using var dir = new TemporaryDirectory();
        string path = dir.Combine(kind + ".safetensors");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(reason, error.Reason);
        Assert.Contains(path, error.Message);
    }
}
