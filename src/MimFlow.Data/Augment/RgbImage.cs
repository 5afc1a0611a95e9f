namespace MimFlow.Data.Augment;

/// <summary>Interleaved 8-bit RGB pixels, row-major, no padding.</summary>
public readonly struct RgbImage(byte[] data, int width, int height)
{
    public byte[] Data { get; } = data;
    public int Width { get; } = width;
    public int Height { get; } = height;
    public int Length => 3 * Width * Height;
    public Span<byte> Pixels => Data.AsSpan(0, Length);
}
