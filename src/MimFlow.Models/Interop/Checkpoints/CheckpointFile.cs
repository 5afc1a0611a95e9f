using System.Buffers.Binary;
using MimFlow.Core.Safetensors;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>An opened checkpoint file: its tensors by name, and what reading it left aside (and why).</summary>
public interface IOpenedCheckpoint : INamedTensors, IDisposable
{
    /// <summary>The file's format as detected from its content: safetensors, pytorch-zip, pytorch-legacy or torchscript.</summary>
    string Format { get; }

    /// <summary>Entries of the file that are not model tensors (optimiser state, arguments, epochs), for the import report.</summary>
    IReadOnlyList<string> LeftOut { get; }
}

/// <summary>How to read a pickled checkpoint.</summary>
/// <param name="StateDictKey">The entry holding the state dict (<c>a/b</c> for a nested one), instead of the unwrap rules.</param>
public sealed record CheckpointReadOptions(string? StateDictKey = null);

/// <summary>
/// Opens a weights file by its content, whatever its extension: safetensors, PyTorch's zip checkpoints (torch.save
/// since 1.6, <c>.pth</c>/<c>.pt</c>/<c>.bin</c>), its legacy pickle format, TorchScript archives, and pickled
/// modules. Pickles are read by <see cref="SafeUnpickler"/>, which runs nothing (docs/model-interop.md,
/// "Checkpoint files").
/// </summary>
public static class CheckpointFile
{
    public static IOpenedCheckpoint Open(string path, CheckpointReadOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"{path}: a folder, not a weights file");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: weights file not found", path);
        path = Path.GetFullPath(path);
        var head = new byte[512];
        int headLength;
        using (var stream = File.OpenRead(path)) headLength = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (headLength == 0) throw new InvalidDataException($"{path}: the file is empty");
        var start = head.AsSpan(0, headLength);
        if (LooksLikeSafetensors(start, new FileInfo(path).Length))
        {
            if (options?.StateDictKey is not null)
                throw new ArgumentException($"{path}: a safetensors file holds one flat set of tensors; --state-dict-key applies to pickled checkpoints");
            try
            {
                return new SafetensorsCheckpoint(SafetensorsFile.Open(path));
            }
            catch (SafetensorsFormatException e)
            {
                // One exception type for every damaged checkpoint, whatever its format.
                throw new InvalidDataException(e.Message, e);
            }
        }
        if (ZipDirectory.LooksLikeZip(start)) return TorchCheckpoint.Open(path, TorchZipFormat.Load, options, cancellationToken);
        if (TorchLegacyFormat.LooksLikePickle(start)) return TorchCheckpoint.Open(path, TorchLegacyFormat.Load, options, cancellationToken);
        if (headLength == 512 && start[257..262].SequenceEqual("ustar"u8))
            throw new InvalidDataException($"{path}: a tar archive (torch.save's format before PyTorch 0.4), which MimFlow does not read; re-save it with a current PyTorch");
        throw new InvalidDataException($"{path}: not a checkpoint format MimFlow reads (safetensors, PyTorch zip or legacy checkpoint, TorchScript archive); it starts with {Convert.ToHexString(start[..Math.Min(8, headLength)])}");
    }

    /// <summary>An 8-byte little-endian header length that fits the file, then a JSON object.</summary>
    private static bool LooksLikeSafetensors(ReadOnlySpan<byte> head, long fileLength) =>
        head.Length >= 10 && BinaryPrimitives.ReadUInt64LittleEndian(head) is ulong header && header >= 2 && header <= (ulong)(fileLength - 8) && head[8] == (byte)'{';

    private sealed class SafetensorsCheckpoint(SafetensorsFile file) : IOpenedCheckpoint
    {
        private readonly SafetensorsTensors tensors = new(file);

        public string Format => "safetensors";
        public IReadOnlyList<string> LeftOut => [];
        public string Origin => tensors.Origin;
        public IEnumerable<string> Names => tensors.Names;
        public bool Contains(string name) => tensors.Contains(name);
        public long[] ShapeOf(string name) => tensors.ShapeOf(name);
        public Tensor Read(string name) => tensors.Read(name);
        public void Dispose() => file.Dispose();
    }
}

/// <summary>A pickled checkpoint's model tensors, read from the mapped file one at a time as they are asked for.</summary>
internal sealed class TorchCheckpoint : IOpenedCheckpoint
{
    private readonly MappedFile file;
    private readonly IStorageSource storages;
    private readonly Dictionary<string, TensorRecord> tensors;
    private readonly List<string> names;

    private TorchCheckpoint(MappedFile file, LoadedPickle loaded, SelectedTensors selected)
    {
        this.file = file;
        storages = loaded.Storages;
        Format = loaded.Format;
        LeftOut = selected.LeftOut;
        names = [.. selected.Tensors.Select(t => t.Key)];
        tensors = new Dictionary<string, TensorRecord>(StringComparer.Ordinal);
        foreach (var (name, record) in selected.Tensors)
            if (!tensors.TryAdd(name, record)) throw new InvalidDataException($"{file.Path}: the tensor name '{name}' occurs twice");
    }

    public static TorchCheckpoint Open(string path, Func<MappedFile, CancellationToken, LoadedPickle> load, CheckpointReadOptions? options, CancellationToken cancellationToken)
    {
        var file = MappedFile.Open(path);
        try
        {
            var loaded = load(file, cancellationToken);
            return new TorchCheckpoint(file, loaded, StateDictSelection.Select(loaded.Root, options?.StateDictKey, path));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public string Format { get; }

    public IReadOnlyList<string> LeftOut { get; }

    public string Origin => file.Path;

    public IEnumerable<string> Names => names;

    public bool Contains(string name) => tensors.ContainsKey(name);

    public long[] ShapeOf(string name) => (long[])Record(name).Shape.Clone();

    public Tensor Read(string name) => TensorMaterializer.ToFloat32(Record(name), storages, file.Path, name);

    private TensorRecord Record(string name) =>
        tensors.TryGetValue(name, out var record) ? record : throw new KeyNotFoundException($"{file.Path}: no tensor named '{name}'");

    public void Dispose() => file.Dispose();
}
