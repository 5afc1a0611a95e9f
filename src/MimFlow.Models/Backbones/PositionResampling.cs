using static TorchSharp.torch;

namespace MimFlow.Models.Backbones;

/// <summary>
/// Position parameters moved to a new patch grid, so weights trained at one image size run at another (e.g. 224 →
/// 384 for fine-tuning, or ADE20K's 512). Absolute embeddings are resized bicubically as timm's
/// <c>resample_abs_pos_embed</c> does (prefix tokens kept, antialiased when shrinking). Relative position tables use
/// the BEiT fine-tuning scheme as timm's <c>resize_rel_pos_bias_table</c> runs it without SciPy: the source offsets
/// are stretched along a geometric progression that reaches the new maximum offset, and every integer offset of the
/// new grid is read off them by bilinear interpolation (clamped at the edges); the 3 [CLS] rows are kept.
/// </summary>
public static class PositionResampling
{
    /// <summary>The side of a square grid of <paramref name="positions"/> patches, or null if it is not square.</summary>
    public static int? SquareGrid(long positions)
    {
        int grid = (int)Math.Round(Math.Sqrt(positions));
        return (long)grid * grid == positions ? grid : null;
    }

    /// <summary>The side of the square grid a relative position table of <paramref name="rows"/> rows belongs to, or null.</summary>
    public static int? GridOfTable(long rows)
    {
        int side = (int)Math.Round((Math.Sqrt(Math.Max(0, rows - 3)) + 1) / 2);
        return RelativePositionBias.TableSize(side, side) == rows ? side : null;
    }

    /// <summary>[1, prefix + Hs·Ws, D] → [1, prefix + Hd·Wd, D].</summary>
    public static Tensor ResampleAbsolute(Tensor positionEmbedding, int sourceGrid, int targetGrid, int prefixTokens = 1)
    {
        long dim = positionEmbedding.shape[2];
        if (positionEmbedding.shape[1] != prefixTokens + (long)sourceGrid * sourceGrid)
            throw new ArgumentException($"pos_embed has {positionEmbedding.shape[1]} tokens, not {prefixTokens} + {sourceGrid}²");
        if (sourceGrid == targetGrid) return positionEmbedding.clone();
        using var scope = NewDisposeScope();
        var prefix = positionEmbedding[.., ..prefixTokens];
        var grid = positionEmbedding[.., prefixTokens..].to(float32).reshape(1, sourceGrid, sourceGrid, dim).permute(0, 3, 1, 2);
        var resized = nn.functional.interpolate(grid, size: [targetGrid, targetGrid], mode: InterpolationMode.Bicubic, align_corners: false,
            antialias: targetGrid < sourceGrid);
        var tokens = resized.permute(0, 2, 3, 1).reshape(1, (long)targetGrid * targetGrid, dim).to(positionEmbedding.dtype);
        return cat([prefix, tokens], 1).MoveToOuterDisposeScope();
    }

    /// <summary>A BEiT table [(2Hs − 1)(2Ws − 1) + 3, heads] → [(2Hd − 1)(2Wd − 1) + 3, heads] for square grids.</summary>
    public static Tensor ResampleRelativeTable(Tensor table, int sourceGrid, int targetGrid)
    {
        const int extraRows = 3;
        if (table.shape[0] != RelativePositionBias.TableSize(sourceGrid, sourceGrid))
            throw new ArgumentException($"relative_position_bias_table has {table.shape[0]} rows, a {sourceGrid}×{sourceGrid} grid has {RelativePositionBias.TableSize(sourceGrid, sourceGrid)}");
        if (sourceGrid == targetGrid) return table.clone();
        int source = 2 * sourceGrid - 1, target = 2 * targetGrid - 1;
        long heads = table.shape[1];
        double[] sourceOffsets = StretchedOffsets(source, target);
        var weights = InterpolationWeights(sourceOffsets, target);
        using var scope = NewDisposeScope();
        var values = table[..^extraRows].to(float64).reshape(source, source, heads);
        // Separable bilinear: rows then columns, each a [target, source] weight matrix.
        var matrix = tensor(weights, [target, source], float64);
        var resized = einsum("ys,xt,sth->yxh", matrix, matrix, values).reshape((long)target * target, heads);
        return cat([resized.to(table.dtype), table[^extraRows..]], 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Source offsets −Σ…0…Σ spaced 1, q, q², … where q solves 1 + q + … + q^(n−1) = target/2 by bisection (BEiT's
    /// geometric progression, n = source/2), so nearby offsets keep their resolution and far ones stretch.
    /// </summary>
    public static double[] StretchedOffsets(int source, int target)
    {
        int half = source / 2;
        double left = 1.01, right = 1.5, q = 0;
        while (right - left > 1e-6)
        {
            q = (left + right) / 2.0;
            double progression = (1.0 - Math.Pow(q, half)) / (1.0 - q);
            if (progression > target / 2) right = q;
            else left = q;
        }
        var distances = new double[half];
        double current = 1;
        for (int i = 0; i < half; i++)
        {
            distances[i] = current;
            current += Math.Pow(q, i + 1);
        }
        return distances.Reverse().Select(d => -d).Append(0).Concat(distances).ToArray();
    }

    /// <summary>Row-major [target, source] weights reading integer offsets −t/2…t/2 off the points, edge-clamped.</summary>
    private static double[] InterpolationWeights(double[] points, int target)
    {
        int n = points.Length, half = target / 2;
        var weights = new double[target * n];
        for (int row = 0; row < target; row++)
        {
            double offset = row - half;
            int right = Array.FindIndex(points, p => p > offset);
            if (right < 0) right = n - 1;
            int left = Math.Max(0, right - 1);
            double toLeft = Math.Max(0, offset - points[left]), toRight = Math.Max(0, points[right] - offset);
            if (toLeft == 0 && toRight == 0) toLeft = toRight = 1;
            // Each corner is weighted by the distance to the opposite one, as a multilinear interpolator does.
            weights[row * n + left] += toRight / (toLeft + toRight);
            weights[row * n + right] += toLeft / (toLeft + toRight);
        }
        return weights;
    }
}
