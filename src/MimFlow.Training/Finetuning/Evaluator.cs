using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using TorchSharp;
using static TorchSharp.torch;

using MimFlow.Training.Runs;

namespace MimFlow.Training.Finetuning;

/// <summary>How <see cref="Evaluator"/> reads the evaluation split.</summary>
public sealed record EvaluateOptions
{
    public int BatchSize { get; init; } = 64;
    public int DecodeWorkers { get; init; } = Environment.ProcessorCount;

    /// <summary>Where the model runs (a loaded model is moved there; a given model stays where it is).</summary>
    public Device? Device { get; init; }

    /// <summary>Evaluate at another input size than the model's (positions resampled, as <c>model forward</c> does).</summary>
    public int? ImageSize { get; init; }

    public void Validate()
    {
        if (BatchSize < 1 || DecodeWorkers < 1) throw new ArgumentException("the evaluation batch size and decode workers must be at least 1");
        if (ImageSize is < 1) throw new ArgumentException($"the image size must be positive (got {ImageSize})");
    }
}

/// <summary>One class's share of the evaluation: images of the class, and how many of them were ranked first / in the top 5.</summary>
public sealed record ClassAccuracy(int Class, string Name, int Images, int Top1Correct, int Top5Correct)
{
    /// <summary>Top-1 accuracy of this class (NaN when the split has no image of it).</summary>
    public double Top1 => Images == 0 ? double.NaN : (double)Top1Correct / Images;
}

/// <summary>
/// Accuracies as fractions in [0, 1] (timm and BEiT print percentages). <see cref="Top5"/> counts the true class
/// among the min(5, K) highest logits, as timm's <c>accuracy</c> does, so it is 1 with five classes or fewer.
/// <see cref="Loss"/> is the mean plain cross-entropy (BEiT's <c>evaluate</c>: no smoothing).
/// </summary>
public sealed record EvaluationResult(int Images, double Top1, double Top5, double Loss, IReadOnlyList<ClassAccuracy> PerClass, int Quarantined);

/// <summary>
/// Counts top-1 / top-5 hits, per class, and the cross-entropy over batches of logits. Ties between equal logits are
/// ranked as torch's <c>topk</c> ranks them.
/// </summary>
public sealed class AccuracyCounter
{
    private readonly int[] images, top1, top5;
    private double lossSum;

    public AccuracyCounter(int classes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        Classes = classes;
        images = new int[classes];
        top1 = new int[classes];
        top5 = new int[classes];
    }

    public int Classes { get; }

    public int Count { get; private set; }

    /// <param name="logits">[B, K] on any device.</param>
    /// <param name="labels">[B] class indices in [0, K).</param>
    public void Add(Tensor logits, Tensor labels)
    {
        if (logits.dim() != 2 || logits.shape[1] != Classes)
            throw new ArgumentException($"logits are [{string.Join(", ", logits.shape)}], expected [B, {Classes}]");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int k = Math.Min(5, Classes);
        var cpuLogits = logits.detach().to(ScalarType.Float32).cpu();
        var cpuLabels = labels.to(ScalarType.Int64).cpu();
        long[] truth = cpuLabels.data<long>().ToArray();
        if (truth.Length != logits.shape[0]) throw new ArgumentException($"{truth.Length} labels for {logits.shape[0]} rows of logits");
        if (truth.Any(t => t < 0 || t >= Classes)) throw new ArgumentException($"labels must lie in [0, {Classes}) (an unlabelled image cannot be scored)");
        long[] ranked = cpuLogits.topk(k, dim: 1, largest: true, sorted: true).indexes.contiguous().data<long>().ToArray();
        for (int row = 0; row < truth.Length; row++)
        {
            int label = (int)truth[row];
            images[label]++;
            if (ranked[row * k] == label) top1[label]++;
            for (int j = 0; j < k; j++)
                if (ranked[row * k + j] == label)
                {
                    top5[label]++;
                    break;
                }
        }
        lossSum += nn.functional.cross_entropy(cpuLogits, cpuLabels, reduction: nn.Reduction.Sum).item<float>();
        Count += truth.Length;
    }

    /// <param name="names">Class names in index order (missing names read as the index).</param>
    public EvaluationResult Result(IReadOnlyList<string> names, int quarantined = 0)
    {
        var perClass = Enumerable.Range(0, Classes)
            .Select(c => new ClassAccuracy(c, c < names.Count ? names[c] : c.ToString(System.Globalization.CultureInfo.InvariantCulture), images[c], top1[c], top5[c]))
            .ToList();
        double Share(int[] hits) => Count == 0 ? double.NaN : (double)hits.Sum() / Count;
        return new EvaluationResult(Count, Share(top1), Share(top5), Count == 0 ? double.NaN : lossSum / Count, perClass, quarantined);
    }
}

/// <summary>
/// Classification accuracy on a labelled split: every image resized (shorter side) and centre-cropped as BEiT's
/// evaluation transform does (<see cref="RecipeFor"/>), normalised with the ImageNet statistics, in listing order;
/// logits from timm's forward_head (the model's own pooling and head). Used after each fine-tuning epoch and by
/// <c>mimflow eval</c>, so both report the same numbers for the same weights.
/// </summary>
public static class Evaluator
{
    /// <summary>
    /// BEiT's evaluation transform (beit/datasets.py <c>build_transform</c>): Resize(int(size / crop_pct)) bicubic and
    /// CenterCrop(size) with crop_pct 224/256 below 384 pixels and 1.0 from 384 on; i.e. 224 → 256/224, 32 → 36/32.
    /// (BEiT skips the resize for inputs of 32 pixels or less, its CIFAR case; ImageNet-layout images of any size are
    /// resized here.)
    /// </summary>
    public static EvalRecipe RecipeFor(int imageSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(imageSize, 1);
        return new EvalRecipe(imageSize < 384 ? imageSize * 256 / 224 : imageSize, imageSize);
    }

    /// <summary><c>mimflow eval --out</c>'s document: the figures and the per-class table (NaN where a class had no image).</summary>
    public static string ResultJson(EvaluationResult result) => System.Text.Json.JsonSerializer.Serialize(result, new System.Text.Json.JsonSerializerOptions
    {
        WriteIndented = true, PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    });

    /// <summary>Loads a ViT model directory with a classification head and evaluates it on <paramref name="data"/>.</summary>
    /// <param name="progress">Images scored so far (of <c>data.Count</c>).</param>
    public static async Task<EvaluationResult> EvaluateAsync(string modelDirectory, SampleIndex data, EvaluateOptions? options = null, CancellationToken cancellationToken = default,
        IProgress<int>? progress = null)
    {
        options ??= new EvaluateOptions();
        options.Validate();
        var spec = ModelDirectory.ReadSpec(modelDirectory);
        if (spec.Kind != ModelKind.Vit) throw new ArgumentException($"{modelDirectory}: a {spec.Kind.ToString().ToLowerInvariant()} model, not a ViT classifier");
        if (spec.Config!.NumClasses == 0) throw new ArgumentException($"{modelDirectory}: the model has no classification head (fine-tune it first: mimflow finetune)");
        int? resize = options.ImageSize is int size && size != spec.Config.ImgSize ? size : null;
        var (_, model) = ModelDirectory.LoadVit(modelDirectory, resize);
        using (model)
        {
            model.to(options.Device ?? CPU);
            return await EvaluateAsync(model, data, options, cancellationToken, progress);
        }
    }

    /// <summary>
    /// Evaluates <paramref name="model"/> where it is (its device, its input size); it runs in eval mode and is put
    /// back into training mode afterwards if it was training.
    /// </summary>
    public static async Task<EvaluationResult> EvaluateAsync(VisionTransformer model, SampleIndex data, EvaluateOptions? options = null, CancellationToken cancellationToken = default,
        IProgress<int>? progress = null)
    {
        options ??= new EvaluateOptions();
        options.Validate();
        int classes = model.Config.NumClasses;
        if (classes == 0) throw new ArgumentException("the model has no classification head");
        EvaluationPass.RequireClasses(data, classes, "the model's head has");
        var device = model.parameters().First().device;
        var counter = new AccuracyCounter(classes);
        int quarantined = await EvaluationPass.RunAsync(model, data, RecipeFor(model.Config.ImgSize), options.BatchSize, options.DecodeWorkers, batch =>
        {
            var (pixels, labels) = Upload(batch, device);
            counter.Add(model.ForwardHead(model.ForwardFeatures(pixels)), labels);
        }, cancellationToken, progress);
        return counter.Result(data.Classes, quarantined);
    }

    /// <summary>A float32 loader batch as pixels [B, 3, S, S] and int64 labels [B] on <paramref name="device"/>.</summary>
    internal static (Tensor Pixels, Tensor Labels) Upload(Batch batch, Device device)
    {
        var view = batch.Views[0];
        var pixels = tensor(batch.ViewFloats(0).ToArray(), [batch.Count, 3, view.Height, view.Width]);
        var labels = tensor(batch.Labels.AsSpan(0, batch.Count).ToArray().Select(l => (long)l).ToArray(), [batch.Count]);
        return device.type == DeviceType.CPU ? (pixels, labels) : (pixels.to(device), labels.to(device));
    }
}
