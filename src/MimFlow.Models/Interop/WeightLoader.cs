using MimFlow.Core.Safetensors;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>Copies safetensors weights into a module's state dict by name, strictly: every name on both sides, equal shapes.</summary>
public static class WeightLoader
{
    public static void LoadStrict(nn.Module module, SafetensorsFile weights)
    {
        var state = module.state_dict();
        var missing = state.Keys.Where(k => !weights.Contains(k)).ToList();
        var unexpected = weights.Entries.Select(e => e.Name).Where(n => !state.ContainsKey(n)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException($"{weights.Path}: names do not match the model: missing [{string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? ", …" : "")}], " +
                                           $"unexpected [{string.Join(", ", unexpected.Take(8))}{(unexpected.Count > 8 ? ", …" : "")}]");
        using var noGrad = no_grad();
        foreach (var (name, target) in state)
        {
            var entry = weights[name];
            if (!entry.Shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{weights.Path}: '{name}' has shape [{string.Join(", ", entry.Shape)}], the model expects [{string.Join(", ", target.shape)}]");
            using var values = tensor(weights.ReadFloat32(name), entry.Shape);
            target.copy_(values);
        }
    }

    /// <summary>Reads one float tensor (e.g. an input batch) from a safetensors file.</summary>
    public static Tensor Read(SafetensorsFile file, string name) => tensor(file.ReadFloat32(name), file[name].Shape);
}
