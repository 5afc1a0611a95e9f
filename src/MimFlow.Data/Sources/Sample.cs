namespace MimFlow.Data.Sources;

/// <summary>One input of a dataset.</summary>
/// <param name="Index">Position in the dataset's deterministic order.</param>
/// <param name="RelativePath">Path below the dataset root, '/'-separated: the stable identity of the sample.</param>
/// <param name="Label">Class index; -1 when unlabelled.</param>
/// <param name="AnnotationRelativePath">The paired label map (ADE20K), else null.</param>
public sealed record Sample(int Index, string RelativePath, int Label, string? AnnotationRelativePath);
