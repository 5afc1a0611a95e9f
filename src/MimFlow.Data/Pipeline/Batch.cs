using MimFlow.Data.Augment;
using MimFlow.Data.Sources;

namespace MimFlow.Data.Pipeline;

/// <summary>
/// A collated batch: per view one contiguous NCHW buffer (uint8 or float32, rented from a pool), labels, masks
/// (N × patches, 1 = masked), and for each row the sample and the augmentation drawn. Dispose returns the buffers.
/// </summary>
public sealed class Batch : IDisposable
{
    private readonly PixelFormat format;
    private readonly LoaderBuffers buffers;
    private bool disposed;

    internal Batch(LoaderBuffers buffers, int capacity, IReadOnlyList<ViewShape> views, PixelFormat format, int maskCells, int masksPerRow = 1, int labelMapCells = 0)
    {
        this.buffers = buffers;
        MasksPerRow = masksPerRow;
        LabelMapCells = labelMapCells;
        LabelMaps = labelMapCells > 0 ? buffers.Bytes.Rent(capacity * labelMapCells) : [];
        this.format = format;
        Capacity = capacity;
        Views = views;
        Bytes = format == PixelFormat.UInt8 ? views.Select(v => buffers.Bytes.Rent(capacity * v.Bytes)).ToArray() : [];
        Floats = format == PixelFormat.Float32 ? views.Select(v => buffers.Floats.Rent(capacity * v.Bytes)).ToArray() : [];
        Labels = new int[capacity];
        MaskCells = maskCells;
        Masks = maskCells > 0 ? new byte[capacity * masksPerRow * maskCells] : [];
        Samples = new Sample[capacity];
        Params = new AugmentParams[capacity];
    }

    public int Capacity { get; }
    public int Count { get; internal set; }
    public PixelFormat Format => format;
    /// <summary>The shape of each view: view v is [Count, 3, Height, Width].</summary>
    public IReadOnlyList<ViewShape> Views { get; }
    /// <summary>Patches of one mask.</summary>
    public int MaskCells { get; }

    /// <summary>Masks per row (views masked): row r's mask of view v is <c>Mask(r, v)</c>.</summary>
    public int MasksPerRow { get; }
    public int[] Labels { get; }
    public byte[] Masks { get; }
    public Sample[] Samples { get; }
    public AugmentParams[] Params { get; }

    /// <summary>Position of this batch in the epoch.</summary>
    public int Number { get; internal set; }

    internal byte[][] Bytes { get; }
    internal float[][] Floats { get; }

    /// <summary>View <paramref name="view"/> as [Count, 3, H, W] uint8 (only with <see cref="PixelFormat.UInt8"/>).</summary>
    public ReadOnlySpan<byte> ViewBytes(int view)
    {
        if (format != PixelFormat.UInt8) throw new InvalidOperationException("this batch holds float32 pixels");
        return Bytes[view].AsSpan(0, Count * Views[view].Bytes);
    }

    /// <summary>View <paramref name="view"/> as [Count, 3, H, W] float32 (only with <see cref="PixelFormat.Float32"/>).</summary>
    public ReadOnlySpan<float> ViewFloats(int view)
    {
        if (format != PixelFormat.Float32) throw new InvalidOperationException("this batch holds uint8 pixels");
        return Floats[view].AsSpan(0, Count * Views[view].Bytes);
    }

    public ReadOnlySpan<byte> Mask(int row, int view = 0) => Masks.AsSpan((row * MasksPerRow + view) * MaskCells, MaskCells);

    /// <summary>Segmentation: per row a label map of view 0's shape (255 = ignored), else empty.</summary>
    public byte[] LabelMaps { get; }

    public int LabelMapCells { get; }

    public ReadOnlySpan<byte> LabelMap(int row) => LabelMaps.AsSpan(row * LabelMapCells, LabelMapCells);

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var buffer in Bytes) buffers.Bytes.Return(buffer);
        foreach (var buffer in Floats) buffers.Floats.Return(buffer);
        if (LabelMaps.Length > 0) buffers.Bytes.Return(LabelMaps);
    }
}
