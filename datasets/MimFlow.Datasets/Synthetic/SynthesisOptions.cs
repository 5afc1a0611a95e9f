namespace MimFlow.Datasets.Synthetic;

public enum SyntheticKind { ImageNet, Ade20k }

/// <summary>What to generate. <see cref="Images"/> counts both splits; <see cref="ValidationFraction"/> of each
/// class (ImageNet) or of the whole set (ADE20K) goes to the validation split.</summary>
public sealed record SynthesisOptions
{
    public required SyntheticKind Kind { get; init; }
    public required string OutputDirectory { get; init; }
    public int Images { get; init; } = 100;

    /// <summary>ImageNet: number of classes (wnid folders). ADE20K: labels 1..Classes are used (at most 150).</summary>
    public int? Classes { get; init; }

    public ulong Seed { get; init; }
    public int MinSide { get; init; } = 200;
    public int MaxSide { get; init; } = 800;
    public double ValidationFraction { get; init; } = 0.2;
    public int JpegQuality { get; init; } = 90;

    /// <summary>Replace what an earlier generation wrote in a non-empty output folder.</summary>
    public bool Force { get; init; }

    public int ClassCount => Classes ?? (Kind == SyntheticKind.ImageNet ? 10 : MimFlow.Data.Sources.Layouts.Ade20kLayout.ClassCount);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first option out of range.</summary>
    public void Validate()
    {
        if (Images < 1) throw new ArgumentException($"--images must be at least 1 (got {Images}).");
        if (Kind == SyntheticKind.ImageNet && (ClassCount < 1 || ClassCount > 100_000))
            throw new ArgumentException($"--classes must be between 1 and 100000 for imagenet (got {ClassCount}).");
        if (Kind == SyntheticKind.Ade20k && (ClassCount < 1 || ClassCount > MimFlow.Data.Sources.Layouts.Ade20kLayout.ClassCount))
            throw new ArgumentException($"--classes must be between 1 and {MimFlow.Data.Sources.Layouts.Ade20kLayout.ClassCount} for ade20k (got {ClassCount}).");
        if (MinSide < 32 || MaxSide < MinSide || MaxSide > 8192)
            throw new ArgumentException($"image sides must satisfy 32 <= min-side <= max-side <= 8192 (got {MinSide}..{MaxSide}).");
        if (ValidationFraction is < 0 or >= 1) throw new ArgumentException($"the validation fraction must be in [0, 1) (got {ValidationFraction}).");
        if (JpegQuality is < 1 or > 100) throw new ArgumentException($"the JPEG quality must be in 1..100 (got {JpegQuality}).");
    }
}

public sealed record SynthesisProgress(int Done, int Total);

/// <param name="Root">The output folder.</param>
/// <param name="TrainImages">Images written to the training split.</param>
/// <param name="ValidationImages">Images written to the validation split.</param>
/// <param name="Bytes">Bytes written (images and label maps).</param>
/// <param name="Classes">ImageNet: the wnids in class-index order. ADE20K: the class names used.</param>
public sealed record SynthesisResult(string Root, int TrainImages, int ValidationImages, long Bytes, TimeSpan Elapsed, IReadOnlyList<string> Classes);

/// <summary>The output folder already holds files and --force was not given.</summary>
public sealed class OutputFolderNotEmptyException(string folder)
    : Exception($"{folder} is not empty; pass --force to replace what an earlier generation wrote there.")
{
    public string Folder { get; } = folder;
}
