using static TorchSharp.torch;

namespace MimFlow.Models.Backbones;

/// <summary>
/// BEiT's relative position bias: a learnable table of (2·Wh − 1)(2·Ww − 1) + 3 rows (the 3 extra rows for
/// cls→token, token→cls and cls→cls) × heads, gathered into a [heads, 1 + N, 1 + N] additive attention bias.
/// </summary>
public static class RelativePositionBias
{
    public static int TableSize(int gridHeight, int gridWidth) => (2 * gridHeight - 1) * (2 * gridWidth - 1) + 3;

    /// <summary>timm's <c>gen_relative_position_index</c>, as a [1 + N, 1 + N] int64 tensor.</summary>
    public static Tensor Index(int gridHeight, int gridWidth)
    {
        int area = gridHeight * gridWidth, size = area + 1, distances = TableSize(gridHeight, gridWidth);
        long[] index = new long[size * size];
        for (int i = 0; i < area; i++)
        {
            int yi = i / gridWidth, xi = i % gridWidth;
            for (int j = 0; j < area; j++)
            {
                int yj = j / gridWidth, xj = j % gridWidth;
                index[(i + 1) * size + j + 1] = (yi - yj + gridHeight - 1) * (2 * gridWidth - 1) + (xi - xj + gridWidth - 1);
            }
        }
        for (int j = 0; j < size; j++) index[j] = distances - 3;
        for (int i = 0; i < size; i++) index[i * size] = distances - 2;
        index[0] = distances - 1;
        return tensor(index, [size, size]);
    }

    /// <summary>The bias [1, heads, 1 + N, 1 + N] from a table [rows, heads].</summary>
    public static Tensor Gather(Tensor table, Tensor index)
    {
        long size = index.shape[0];
        return table[index.view(-1)].view(size, size, -1).permute(2, 0, 1).unsqueeze(0);
    }
}
