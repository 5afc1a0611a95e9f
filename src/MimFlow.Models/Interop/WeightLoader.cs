using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>Named tensors to load from: a safetensors file, or a checkpoint whose names are being translated.</summary>
public interface INamedTensors
{
    /// <summary>Where the tensors come from, for error messages (a path).</summary>
    string Origin { get; }

    IEnumerable<string> Names { get; }

    bool Contains(string name);

    long[] ShapeOf(string name);

    /// <summary>The tensor as float32 on the CPU (the caller disposes it).</summary>
    Tensor Read(string name);
}

/// <summary>The tensors of a safetensors file, read on demand (the file stays memory-mapped).</summary>
public sealed class SafetensorsTensors(SafetensorsFile file) : INamedTensors
{
    public string Origin => file.Path;

    public IEnumerable<string> Names => file.Entries.Select(e => e.Name);

    public bool Contains(string name) => file.Contains(name);

    public long[] ShapeOf(string name) => file[name].Shape;

    public Tensor Read(string name) => tensor(file.ReadFloat32(name), file[name].Shape);
}

/// <summary>
/// Copies named tensors into a module's state dict strictly: every name on both sides, equal shapes. With
/// <c>resamplePositions</c>, <c>pos_embed</c> and <c>relative_position_bias_table</c> tensors trained on another patch
/// grid are moved to the module's grid (<see cref="PositionResampling"/>) instead of being refused.
/// </summary>
public static class WeightLoader
{
    public static void LoadStrict(nn.Module module, SafetensorsFile weights, bool resamplePositions = false) =>
        LoadStrict(module, new SafetensorsTensors(weights), resamplePositions);

    public static void LoadStrict(nn.Module module, INamedTensors weights, bool resamplePositions = false)
    {
        var state = module.state_dict();
        var missing = state.Keys.Where(k => !weights.Contains(k)).ToList();
        var unexpected = weights.Names.Where(n => !state.ContainsKey(n)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException($"{weights.Origin}: names do not match the model: missing [{Listed(missing)}], unexpected [{Listed(unexpected)}]");
        using var noGrad = no_grad();
        foreach (var (name, target) in state)
        {
            long[] shape = weights.ShapeOf(name);
            using var values = weights.Read(name);
            if (shape.SequenceEqual(target.shape))
            {
                target.copy_(values);
                continue;
            }
            using var moved = resamplePositions ? Resampled(name, values, target.shape) : null;
            if (moved is null)
                throw new InvalidDataException($"{weights.Origin}: '{name}' has shape [{string.Join(", ", shape)}], the model expects [{string.Join(", ", target.shape)}]");
            target.copy_(moved);
        }
    }

    private static Tensor? Resampled(string name, Tensor values, long[] targetShape)
    {
        if (name.EndsWith("pos_embed", StringComparison.Ordinal) && values.dim() == 3 && values.shape[2] == targetShape[2]
            && PositionResampling.SquareGrid(values.shape[1] - 1) is int sourceGrid && PositionResampling.SquareGrid(targetShape[1] - 1) is int targetGrid)
            return PositionResampling.ResampleAbsolute(values, sourceGrid, targetGrid);
        if (name.EndsWith("relative_position_bias_table", StringComparison.Ordinal) && values.dim() == 2 && values.shape[1] == targetShape[1]
            && PositionResampling.GridOfTable(values.shape[0]) is int sourceSide && PositionResampling.GridOfTable(targetShape[0]) is int targetSide)
            return PositionResampling.ResampleRelativeTable(values, sourceSide, targetSide);
        return null;
    }

    private static string Listed(List<string> names) => string.Join(", ", names.Take(8)) + (names.Count > 8 ? ", …" : "");

    /// <summary>Reads one float tensor (e.g. an input batch) from a safetensors file.</summary>
    public static Tensor Read(SafetensorsFile file, string name) => tensor(file.ReadFloat32(name), file[name].Shape);
}
