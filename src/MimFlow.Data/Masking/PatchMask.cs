namespace MimFlow.Data.Masking;

/// <summary>A boolean mask over a grid of patches, row-major; true = masked (to be predicted).</summary>
public sealed class PatchMask
{
    private readonly bool[] cells;

    public PatchMask(int height, int width)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        Height = height;
        Width = width;
        cells = new bool[height * width];
    }

    public int Height { get; }
    public int Width { get; }
    public int Count => cells.Length;

    /// <summary>Number of masked patches.</summary>
    public int MaskedCount { get; private set; }

    /// <summary>Number of blocks placed (blockwise generators); 0 for the others.</summary>
    public int Blocks { get; internal set; }

    public bool this[int row, int column] => cells[row * Width + column];

    public ReadOnlySpan<bool> Cells => cells;

    internal bool Set(int index)
    {
        if (cells[index]) return false;
        cells[index] = true;
        MaskedCount++;
        return true;
    }

    /// <summary>Writes the mask as bytes (1 = masked), e.g. into a batch's mask tensor.</summary>
    public void CopyTo(Span<byte> destination)
    {
        for (int i = 0; i < cells.Length; i++) destination[i] = cells[i] ? (byte)1 : (byte)0;
    }
}
