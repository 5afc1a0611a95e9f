namespace MimFlow.Data.Augment;

/// <summary>8-bit RGB as three planes (R, G, B), each <see cref="Width"/> × <see cref="Height"/>, row-major, no
/// padding: the CHW layout of the views themselves.</summary>
public readonly struct PlanarImage(Memory<byte> data, int width, int height)
{
    public Memory<byte> Data { get; } = data;
    public int Width { get; } = width;
    public int Height { get; } = height;
    public int PlaneLength => Width * Height;
    public int Length => 3 * Width * Height;
    public Span<byte> Pixels => Data.Span[..Length];
    public Span<byte> Plane(int channel) => Data.Span.Slice(channel * PlaneLength, PlaneLength);

    /// <summary>Copies into interleaved RGB (<paramref name="rgb"/> of <see cref="Length"/> bytes).</summary>
    public void ToInterleaved(Span<byte> rgb)
    {
        var r = Plane(0);
        var g = Plane(1);
        var b = Plane(2);
        for (int i = 0; i < r.Length; i++)
        {
            rgb[3 * i] = r[i];
            rgb[3 * i + 1] = g[i];
            rgb[3 * i + 2] = b[i];
        }
    }

    /// <summary>Copies interleaved RGB back into the planes.</summary>
    public void FromInterleaved(ReadOnlySpan<byte> rgb)
    {
        var r = Plane(0);
        var g = Plane(1);
        var b = Plane(2);
        for (int i = 0; i < r.Length; i++)
        {
            r[i] = rgb[3 * i];
            g[i] = rgb[3 * i + 1];
            b[i] = rgb[3 * i + 2];
        }
    }
}
