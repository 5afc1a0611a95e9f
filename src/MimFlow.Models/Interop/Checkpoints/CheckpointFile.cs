using MimFlow.Core.Safetensors;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>An opened checkpoint file: its tensors by name, and what reading it left aside (and why).</summary>
public interface IOpenedCheckpoint : INamedTensors, IDisposable
{
    /// <summary>The file's format as detected from its content (e.g. "safetensors").</summary>
    string Format { get; }

    /// <summary>Entries of the file that are not model tensors (optimiser state, arguments, epochs), for the import report.</summary>
    IReadOnlyList<string> LeftOut { get; }
}

/// <summary>Opens a weights file by its content, whatever its extension.</summary>
public static class CheckpointFile
{
    public static IOpenedCheckpoint Open(string path)
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"{path}: a folder, not a weights file");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: weights file not found", path);
        return new SafetensorsCheckpoint(SafetensorsFile.Open(path));
    }

    private sealed class SafetensorsCheckpoint(SafetensorsFile file) : IOpenedCheckpoint
    {
        private readonly SafetensorsTensors tensors = new(file);

        public string Format => "safetensors";
        public IReadOnlyList<string> LeftOut => [];
        public string Origin => tensors.Origin;
        public IEnumerable<string> Names => tensors.Names;
        public bool Contains(string name) => tensors.Contains(name);
        public long[] ShapeOf(string name) => tensors.ShapeOf(name);
        public TorchSharp.torch.Tensor Read(string name) => tensors.Read(name);
        public void Dispose() => file.Dispose();
    }
}
