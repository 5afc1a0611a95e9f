using static TorchSharp.torch;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// A segmentation decoder over ViT patch tokens. <see cref="Layers"/> names the blocks whose outputs it reads (0-based);
/// empty means the backbone's final, normed tokens. Each input is [B, g·g, D] ([CLS] removed, row-major grid).
/// </summary>
public abstract class DecodeHead(string name) : nn.Module<IReadOnlyList<Tensor>, long, long, Tensor>(name)
{
    public abstract IReadOnlyList<int> Layers { get; }

    public abstract int Classes { get; }

    /// <summary>Tokens [B, g·g, D] as a feature map [B, D, g, g].</summary>
    protected static Tensor ToGrid(Tensor patches)
    {
        long batch = patches.shape[0], tokens = patches.shape[1];
        long grid = (long)Math.Round(Math.Sqrt(tokens));
        if (grid * grid != tokens) throw new ArgumentException($"{tokens} patch tokens do not form a square grid");
        return patches.transpose(1, 2).reshape(batch, -1, grid, grid);
    }
}
