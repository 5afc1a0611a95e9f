namespace MimFlow.Models.Backbones;

/// <summary>
/// Named architectures for <c>mimflow model init</c>: ViT sizes (timm's vit_*), BEiT variants as the BEiT papers
/// pretrain them (relative position bias per layer, LayerScale 0.1 for base sizes and 1e-5 for large, mask token,
/// no absolute position embeddings, average pooling), the CLIP ViT-B/16 visual encoder (pre-norm, quick-GELU,
/// LayerNorm eps 1e-5) and the DINO ViT-S/16 and ViT-B/16 teachers (plain ViTs without a head).
/// </summary>
public static class Architectures
{
    private static readonly (string Size, int Dim, int Depth, int Heads, int Patch)[] Sizes =
    [
        ("tiny", 192, 12, 3, 16), ("small", 384, 12, 6, 16), ("base", 768, 12, 12, 16), ("large", 1024, 24, 16, 16), ("huge", 1280, 32, 16, 14),
    ];

    public static IReadOnlyList<string> Names { get; } =
        Sizes.Select(s => $"vit-{s.Size}").Concat(Sizes.Select(s => $"beit-{s.Size}")).Concat(["clip-b16", "dino-s16", "dino-b16"]).ToList();

    public static VitConfig Get(string name, int numClasses = 0)
    {
        if (name == "clip-b16")
            return new VitConfig { EmbedDim = 768, Depth = 12, NumHeads = 12, PreNorm = true, Activation = Activation.QuickGelu, LayerNormEps = 1e-5, NumClasses = numClasses };
        if (name is "dino-s16" or "dino-b16") return Get(name == "dino-s16" ? "vit-small" : "vit-base", numClasses);
        string[] parts = name.Split('-', 2);
        var size = Sizes.FirstOrDefault(s => parts.Length == 2 && s.Size == parts[1]);
        if (size.Size is null || parts[0] is not ("vit" or "beit"))
            throw new ArgumentException($"unknown architecture '{name}'; known: {string.Join(", ", Names)}.");
        var common = new VitConfig
        {
            ImgSize = 224, PatchSize = size.Patch, EmbedDim = size.Dim, Depth = size.Depth, NumHeads = size.Heads, NumClasses = numClasses,
        };
        return parts[0] == "vit"
            ? common
            : common with
            {
                BeitAttention = true, UseAbsPosEmb = false, UseRelPosBias = true, InitValues = size.Dim >= 1024 ? 1e-5 : 0.1,
                GlobalPool = "avg", UseMaskToken = true, DropPathRate = 0.1,
            };
    }
}
