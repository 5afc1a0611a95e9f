using MimFlow.Core.Randomness;
using MimFlow.Data.Decoding;

namespace MimFlow.Data.Augment;

/// <summary>Draws the random decisions of one sample from its header; rendering them is <see cref="Augmenter"/>'s job.</summary>
public interface IAugmentRecipe
{
    string Name { get; }

    /// <summary>The output views every sample of this recipe has, in order.</summary>
    IReadOnlyList<ViewShape> Views { get; }

    AugmentParams Draw(ImageHeader header, ref StableRandom random);
}

/// <summary>
/// BEiT / BEiT v2 / MaskDistill pretraining: ColorJitter(0.4, 0.4, 0.4), horizontal flip 0.5, RandomResizedCrop
/// (0.08–1, 3/4–4/3) to <see cref="Size"/> bicubic, and for BEiT v1 a second view of the same crop at
/// <see cref="SecondViewSize"/> (lanczos) for the dVAE tokenizer. Jitter and flip apply to every view, as BEiT's
/// common transform precedes its two-view crop.
/// </summary>
public sealed record PretrainRecipe(int Size = 224, int? SecondViewSize = 112) : IAugmentRecipe
{
    public RandomResizedCrop Crop { get; init; } = new();

    /// <summary>BEiT's ColorJitter acts on the whole image before the crop: its contrast centre is the whole image's mean grey.</summary>
    public ColorJitter Jitter { get; init; } = new() { WholeImageContrast = true };
    public double FlipProbability { get; init; } = 0.5;

    public string Name => SecondViewSize is null ? "pretrain" : "pretrain-two-view";

    public IReadOnlyList<ViewShape> Views => SecondViewSize is int second
        ? [new ViewShape(Size, Size), new ViewShape(second, second)]
        : [new ViewShape(Size, Size)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        var jitter = Jitter.Draw(ref random);
        bool flip = random.NextBool(FlipProbability);
        var crop = Crop.Draw(header.Width, header.Height, ref random);
        var first = new ViewParams(crop, Size, Size, ResampleKernel.Bicubic, flip, jitter);
        return SecondViewSize is int second
            ? AugmentParams.Of(first, new ViewParams(crop, second, second, ResampleKernel.Lanczos3, flip, jitter))
            : AugmentParams.Of(first);
    }
}

/// <summary>Evaluation: resize the shorter side to <see cref="ResizeTo"/> (bicubic), centre crop <see cref="CropSize"/>;
/// computed as the equivalent box of the original image, resized once.</summary>
public sealed record EvalRecipe(int ResizeTo = 256, int CropSize = 224) : IAugmentRecipe
{
    public string Name => "eval";

    public IReadOnlyList<ViewShape> Views => [new ViewShape(CropSize, CropSize)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        double scale = (double)ResizeTo / Math.Min(header.Width, header.Height);
        double side = CropSize / scale;
        double width = Math.Min(side, header.Width), height = Math.Min(side, header.Height);
        var crop = new CropBox((header.Width - width) / 2, (header.Height - height) / 2, width, height);
        return AugmentParams.Of(new ViewParams(crop, CropSize, CropSize, ResampleKernel.Bicubic, false, []));
    }
}

/// <summary>
/// iBOT / DINO multi-crop: <see cref="GlobalCrops"/> crops of <see cref="GlobalSize"/> (scale
/// <see cref="GlobalMinScale"/>–1) and <see cref="LocalCrops"/> of <see cref="LocalSize"/> (scale 0.05–
/// <see cref="GlobalMinScale"/>), all bicubic; each: flip 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) with probability
/// 0.8, grayscale 0.2, then Gaussian blur (radius 0.1–2) with probability 1.0 (first global), 0.1 (second global,
/// followed by solarize 0.2) or 0.5 (locals).
/// </summary>
public sealed record MultiCropRecipe(int GlobalCrops = 2, int GlobalSize = 224, int LocalCrops = 10, int LocalSize = 96, double GlobalMinScale = 0.32, double LocalMinScale = 0.05)
    : IAugmentRecipe
{
    private static readonly ColorJitter Jitter = new(0.4, 0.4, 0.2, 0.1);

    public string Name => "multi-crop";

    public IReadOnlyList<ViewShape> Views =>
        Enumerable.Repeat(new ViewShape(GlobalSize, GlobalSize), GlobalCrops).Concat(Enumerable.Repeat(new ViewShape(LocalSize, LocalSize), LocalCrops)).ToList();

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        var views = new List<ViewParams>(GlobalCrops + LocalCrops);
        var globalCrop = new RandomResizedCrop(GlobalMinScale, 1.0);
        var localCrop = new RandomResizedCrop(LocalMinScale, GlobalMinScale);
        for (int i = 0; i < GlobalCrops + LocalCrops; i++)
        {
            bool global = i < GlobalCrops;
            var crop = (global ? globalCrop : localCrop).Draw(header.Width, header.Height, ref random);
            bool flip = random.NextBool(0.5);
            var ops = new List<PixelOp>();
            if (random.NextBool(0.8)) ops.AddRange(Jitter.Draw(ref random));
            if (random.NextBool(0.2)) ops.Add(new Grayscale());
            double blurProbability = !global ? 0.5 : i == 0 ? 1.0 : 0.1;
            if (random.NextBool(blurProbability)) ops.Add(new GaussianBlur(random.Uniform(0.1, 2.0)));
            if (global && i == 1 && random.NextBool(0.2)) ops.Add(new Solarize());
            int size = global ? GlobalSize : LocalSize;
            views.Add(new ViewParams(crop, size, size, ResampleKernel.Bicubic, flip, ops));
        }
        return new AugmentParams(views, []);
    }
}

/// <summary>
/// Fine-tuning (BEiT's classification recipe through timm): RandomResizedCrop 224 bicubic, flip 0.5,
/// RandAugment rand-m9-mstd0.5-inc1, ImageNet normalisation, random erasing 0.25 (pixel mode). Mixup and CutMix
/// act on batches and belong to the training stage.
/// </summary>
public sealed record FinetuneRecipe(int Size = 224) : IAugmentRecipe
{
    public RandomResizedCrop Crop { get; init; } = new();
    public RandAugment Augment { get; init; } = new();
    public RandomErasing Erasing { get; init; } = new();

    public string Name => "finetune";

    public IReadOnlyList<ViewShape> Views => [new ViewShape(Size, Size)];

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        var crop = Crop.Draw(header.Width, header.Height, ref random);
        bool flip = random.NextBool(0.5);
        var ops = Augment.Draw(Size, Size, ref random);
        var erase = Erasing.Draw(0, Size, Size, ref random);
        return new AugmentParams([new ViewParams(crop, Size, Size, ResampleKernel.Bicubic, flip, ops)], erase is null ? [] : [erase]);
    }
}

/// <summary>
/// K independent draws of <see cref="Inner"/> per sample, rendered together: views are the inner views repeated K
/// times (draw k occupies views k·m … k·m + m − 1). Pre-tokenization stores each draw as its own row.
/// </summary>
public sealed record RepeatedDraws(IAugmentRecipe Inner, int Draws) : IAugmentRecipe
{
    public string Name => $"{Inner.Name}×{Draws}";

    public IReadOnlyList<ViewShape> Views => Enumerable.Range(0, Draws).SelectMany(_ => Inner.Views).ToList();

    public AugmentParams Draw(ImageHeader header, ref StableRandom random)
    {
        var views = new List<ViewParams>();
        var erase = new List<EraseBox>();
        int perDraw = Inner.Views.Count;
        for (int k = 0; k < Draws; k++)
        {
            var drawn = Inner.Draw(header, ref random);
            views.AddRange(drawn.Views);
            erase.AddRange(drawn.Erase.Select(e => e with { View = e.View + k * perDraw }));
        }
        return new AugmentParams(views, erase);
    }

    /// <summary>Draw <paramref name="k"/> alone, with view numbers as the inner recipe has them.</summary>
    public AugmentParams Slice(AugmentParams all, int k)
    {
        int perDraw = Inner.Views.Count;
        return new AugmentParams(all.Views.Skip(k * perDraw).Take(perDraw).ToList(),
            all.Erase.Where(e => e.View / perDraw == k).Select(e => e with { View = e.View - k * perDraw }).ToList());
    }
}

/// <summary>The recipes by the names the benchmarks and tools use: each at its paper's defaults.</summary>
public static class RecipeCatalog
{
    /// <summary>pretrain: BEiT's single 224 view (the torchvision peer's recipe); pretrain-two-view: plus the dVAE's
    /// 112 view; multi-crop: iBOT/DINO; finetune: BEiT's fine-tuning recipe; eval: resize and centre crop;
    /// segmentation: BEiT's ADE20K crops (data with label maps).</summary>
    public static IReadOnlyList<string> Names { get; } = ["pretrain", "pretrain-two-view", "multi-crop", "finetune", "eval", "segmentation"];

    public static IAugmentRecipe ByName(string name) => name switch
    {
        "pretrain" => new PretrainRecipe(SecondViewSize: null),
        "pretrain-two-view" => new PretrainRecipe(),
        "multi-crop" => new MultiCropRecipe(),
        "finetune" => new FinetuneRecipe(),
        "eval" => new EvalRecipe(),
        "segmentation" => new SegmentationRecipe(),
        _ => throw new ArgumentException($"unknown recipe '{name}' ({string.Join(", ", Names)})"),
    };
}
