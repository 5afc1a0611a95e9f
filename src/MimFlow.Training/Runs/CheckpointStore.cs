using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>Where a run stands: the next step to run and the input position it reads from (in the input's unit).</summary>
public sealed record TrainerState(long Step, int Epoch, long BatchInEpoch, long SkippedSteps, string Objective, string Model, ulong Seed);

/// <summary>
/// Checkpoints of a run: <c>checkpoints/step-NNNNNNNN/</c> holds <c>backbone/</c> (a model directory: exportable with
/// <c>mimflow model export</c>), <c>training.safetensors</c> (every parameter and buffer of the objective, and the
/// optimiser state under <c>optimizer.*</c>) and <c>state.json</c>. A checkpoint is built in a hidden folder and
/// renamed into place, then <c>latest.json</c> is replaced atomically, so a crash at any point leaves the previous
/// checkpoint intact and current. Older checkpoints beyond <c>keep</c> are removed. A loop's own files (a supervised
/// run's <c>supervised.json</c>, a segmenter's <c>segmenter.json</c>) go into the hidden folder too, so no checkpoint is
/// ever visible without them.
/// <para>
/// A transient I/O error while building (EIO, ESTALE … on a network file system) builds the checkpoint again, whole,
/// in a new hidden folder (the failed one is removed); <c>latest.json</c> and the removal of old checkpoints are
/// retried the same way. A fault that persists ends the run naming the checkpoint and the file.
/// </para>
/// </summary>
/// <param name="io">Retries of transient I/O errors, and how the files are opened; null: the defaults.</param>
public sealed class CheckpointStore(string runDirectory, int keep = 2, TransientIo? io = null)
{
    private readonly TransientIo io = io ?? new TransientIo();

    public const string LatestFileName = ModelDirectory.RunPointerFileName;
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private string Root => Path.Combine(runDirectory, "checkpoints");

    /// <param name="files">Further text files of the checkpoint (name → content).</param>
    public string Save(TrainerState state, ModelSpec backboneSpec, nn.Module backbone, nn.Module objective, IReadOnlyDictionary<string, Tensor> optimizerState,
        IReadOnlyDictionary<string, string>? files = null)
    {
        Directory.CreateDirectory(Root);
        string name = $"step-{state.Step:D8}";
        string final = Path.Combine(Root, name);
        io.Run(final, "writing the checkpoint", _ => Build(final, name, state, backboneSpec, backbone, objective, optimizerState, files));
        string pointer = Path.Combine(runDirectory, LatestFileName);
        io.Run(pointer, "writing the run pointer", _ => AtomicFile.WriteAllText(pointer, JsonSerializer.Serialize(new { checkpoint = name, step = state.Step }, Json)));
        io.Run(Root, "removing old checkpoints", _ =>
        {
            foreach (string old in Directory.EnumerateDirectories(Root, "step-*").Order(StringComparer.Ordinal).SkipLast(keep)) Directory.Delete(old, recursive: true);
            foreach (string stale in Directory.EnumerateDirectories(Root, ".step-*")) Directory.Delete(stale, recursive: true);
        });
        return final;
    }

    /// <summary>One attempt: every file into a fresh hidden folder, checksums last, then the rename. A failed attempt
    /// removes its folder, so the next starts clean.</summary>
    private void Build(string final, string name, TrainerState state, ModelSpec backboneSpec, nn.Module backbone, nn.Module objective,
        IReadOnlyDictionary<string, Tensor> optimizerState, IReadOnlyDictionary<string, string>? files)
    {
        string building = Path.Combine(Root, $".{name}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial");
        Directory.CreateDirectory(building);
        try
        {
            ModelDirectory.Save(Path.Combine(building, "backbone"), backboneSpec, backbone);
            var writer = new SafetensorsWriter();
            writer.Metadata["format"] = "pt";
            foreach (var (key, value) in objective.state_dict()) AddFloat32(writer, key, value);
            foreach (var (key, value) in optimizerState) AddFloat32(writer, "optimizer." + key, value);
            writer.Write(Path.Combine(building, "training.safetensors"));
            AtomicFile.WriteAllText(Path.Combine(building, "state.json"), JsonSerializer.Serialize(state, Json));
            foreach (var (file, content) in files ?? new Dictionary<string, string>()) AtomicFile.WriteAllText(Path.Combine(building, file), content);
            FolderChecksums.Write(building, io.Files);
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(building, final);
        }
        catch
        {
            try
            {
                if (Directory.Exists(building)) Directory.Delete(building, recursive: true);
            }
            catch (IOException)
            {
                // Left for the next save's sweep of hidden folders; the error that matters is the one being thrown.
            }
            throw;
        }
    }

    /// <summary>The checkpoint <c>latest.json</c> names (a folder of <c>checkpoints/</c>, nowhere else), or null for a run without one.</summary>
    public string? Latest()
    {
        string pointer = Path.Combine(runDirectory, LatestFileName);
        if (!File.Exists(pointer)) return null;
        string folder = Path.Combine(Root, ModelDirectory.CheckpointNamedBy(pointer));
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{pointer} names {folder}, which is missing");
        return folder;
    }

    /// <summary>
    /// The state of a checkpoint: state.json checked against its recorded SHA-256 first (so a damaged state is never
    /// acted on, e.g. compared with the request), then its values: counts not negative, a step that is the
    /// checkpoint's own (the folder is named for it), names present.
    /// </summary>
    public static TrainerState ReadState(string checkpoint)
    {
        string path = Path.Combine(checkpoint, "state.json");
        FolderChecksums.Verify(checkpoint, under: "state.json");
        TrainerState state;
        try
        {
            state = JsonSerializer.Deserialize<TrainerState>(RegularFile.ReadAllText(path, 1 << 20), Json) ?? throw new InvalidDataException($"{path}: empty");
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or OverflowException)
        {
            throw new InvalidDataException($"{path}: not a checkpoint state ({e.Message})", e);
        }
        if (state.Step < 0 || state.Epoch < 0 || state.BatchInEpoch < 0 || state.SkippedSteps < 0 || state.SkippedSteps > state.Step)
            throw new InvalidDataException($"{path}: step {state.Step}, epoch {state.Epoch}, batch {state.BatchInEpoch}, skipped {state.SkippedSteps}: not a position a run can be at");
        if (state.Objective is null || state.Model is null) throw new InvalidDataException($"{path}: no objective or model");
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpoint));
        if (name.StartsWith("step-", StringComparison.Ordinal) && name != $"step-{state.Step:D8}")
            throw new InvalidDataException($"{path}: step {state.Step}, but the checkpoint is {name}");
        return state;
    }

    /// <summary>
    /// Restores the objective's parameters and buffers; returns the optimiser tensors (names without the prefix). Every
    /// file of the checkpoint is first checked against its recorded SHA-256, so a damaged checkpoint is refused
    /// instead of resuming with other weights.
    /// </summary>
    public static Dictionary<string, Tensor> Restore(string checkpoint, nn.Module objective)
    {
        FolderChecksums.Verify(checkpoint);
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Open(Path.Combine(checkpoint, "training.safetensors"));
        }
        catch (SafetensorsFormatException e)
        {
            // One refusal type for every damaged checkpoint file (the message names the file already).
            throw new InvalidDataException(e.Message, e);
        }
        using var _ = file;
        var state = objective.state_dict();
        using (no_grad())
            foreach (var (key, target) in state)
            {
                if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: '{key}' is missing; the checkpoint belongs to another objective or model");
                using var value = WeightLoader.Read(file, key);
                target.copy_(value.to(target.dtype));
            }
        return file.Entries.Where(e => e.Name.StartsWith("optimizer.", StringComparison.Ordinal))
            .ToDictionary(e => e.Name["optimizer.".Length..], e => WeightLoader.Read(file, e.Name));
    }

    private static void AddFloat32(SafetensorsWriter writer, string name, Tensor value)
    {
        using var cpu = value.detach().to(float32).cpu().contiguous();
        writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
    }
}
