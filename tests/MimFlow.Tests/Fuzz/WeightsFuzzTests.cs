using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using MimFlow.Models.Interop.Checkpoints;
using MimFlow.Tests.Models;
using MimFlow.Torch.Backend;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged safetensors files and PyTorch checkpoints (the zip pickles, TorchScript archive and legacy files of
/// tests/fixtures/checkpoints): every case opens to tensors that agree with their shapes, or is refused with an
/// InvalidDataException naming the file.
/// </summary>
public sealed class WeightsFuzzTests(ITestOutputHelper output)
{
    private static readonly Type[] Refusals = [typeof(InvalidDataException)];

    /// <summary>A safetensors file with every dtype, metadata, an empty and a 0-d tensor, beside a tiny model's weights.</summary>
    private static string EveryDtype(TemporaryDirectory dir)
    {
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "pt";
        writer.AddFloat32("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
        writer.Add<Half>("f16", SafetensorsDType.F16, [3], [(Half)0.5f, (Half)(-1f), (Half)2f]);
        writer.Add<ushort>("bf16", SafetensorsDType.BF16, [2], [0x3F80, 0xC040]);
        writer.Add<double>("f64", SafetensorsDType.F64, [1, 1], [2.5]);
        writer.Add<long>("i64", SafetensorsDType.I64, [2], [long.MaxValue, -7]);
        writer.Add<int>("i32", SafetensorsDType.I32, [], [42]);
        writer.Add<byte>("u8", SafetensorsDType.U8, [0, 4], []);
        writer.Add<byte>("bool", SafetensorsDType.BOOL, [2], [1, 0]);
        string path = dir.Combine("dtypes.safetensors");
        writer.Write(path);
        return path;
    }

    /// <summary>Opens a safetensors file and reads every tensor, checking each against its declared shape.</summary>
    private static void ReadAll(string path)
    {
        using var file = SafetensorsFile.Open(path);
        foreach (var entry in file.Entries)
        {
            if (entry.ElementCount * entry.DType.Size() != file.Bytes(entry).Length) throw new InvalidOperationException($"{entry.Name}: size disagrees with shape");
            if (entry.DType is SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F64)
            {
                if (file.ReadFloat32(entry.Name).Length != entry.ElementCount) throw new InvalidOperationException($"{entry.Name}: wrong value count");
            }
        }
    }

    /// <summary>Opens any weights file by content and materialises every tensor as libtorch does for an import.</summary>
    private static void ReadCheckpoint(string path)
    {
        using var file = CheckpointFile.Open(path);
        foreach (string name in file.Names)
        {
            using var scope = NewDisposeScope();
            long[] shape = file.ShapeOf(name);
            var tensor = file.Read(name);
            if (!tensor.shape.SequenceEqual(shape)) throw new InvalidOperationException($"{name}: read [{string.Join(", ", tensor.shape)}], declared [{string.Join(", ", shape)}]");
            if (tensor.dtype != ScalarType.Float32) throw new InvalidOperationException($"{name}: read as {tensor.dtype}");
        }
    }

    [Fact]
    public void Damaged_safetensors_files_are_read_exactly_or_refused_naming_the_file()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun("safetensors", output);
        string model = TinyModels.Write(dir.Combine("m"), "beit");
        var sources = new[] { EveryDtype(dir), Path.Combine(model, "weights.safetensors") };
        int seed = 1;
        foreach (string source in sources)
        {
            byte[] original = File.ReadAllBytes(source);
            int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
            foreach (var fuzz in Mutations.Of(original, seed++, 300, [0, headerEnd - 40, headerEnd]))
            {
                string path = dir.Combine("case.safetensors");
                File.WriteAllBytes(path, fuzz.Bytes);
                run.Case($"{Path.GetFileName(source)}: {fuzz.Label}", () => ReadAll(path), [path], [typeof(SafetensorsFormatException), .. Refusals]);
                run.Case($"{Path.GetFileName(source)} as a checkpoint: {fuzz.Label}", () => ReadCheckpoint(path), [path], Refusals);
            }
        }
        run.Finish();
    }

    public static TheoryData<string> CheckpointFixtures => new()
    {
        "beit_unilm.pth", "beit_unilm_legacy.pth", "clip_vit_tiny.pt", "dall_e_encoder.pkl", "dino_checkpoint.pth", "dtypes.pth", "dtypes_protocol4.pth",
    };

    [Theory]
    [InlineData("beit_unilm.ref.safetensors", "unilm-beit")]
    [InlineData("clip_vit_tiny.ref.safetensors", "openai-clip")]
    [InlineData("dall_e_encoder.ref.safetensors", "dall-e")]
    [InlineData("vit_clip_tiny (transformers names)", "hf-clip")]
    public void Checkpoints_with_a_tensor_left_out_renamed_reshaped_or_retyped_import_or_are_refused(string fixture, string format)
    {
        // Well-formed files whose tensors are not the model's exercise the readers that derive a configuration from
        // names and shapes and translate tensors (reshape, transpose, stack) into MimFlow's names.
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun($"{fixture} as {format}", output);
        string path = dir.Combine(fixture), source = RepositoryFiles.PathOf("tests", "fixtures", "checkpoints", fixture);
        if (format == "hf-clip")
        {
            // transformers' naming of the CLIP fixture, made the way the HF import tests make it.
            source = dir.Combine("hf-clip.safetensors");
            using var scope = NewDisposeScope();
            HuggingFaceNaming.Write(source, HuggingFaceNaming.Clip(HuggingFaceNaming.Read(SharedFixtures.PathOf("timm", "vit_clip_tiny", "weights.safetensors")), withText: false));
        }
        // The transformers CLIP is a 224-pixel model: fewer cases keep this one's time in line with the others.
        foreach (var fuzz in Mutations.OfSafetensors(source, fixture.Length * 31, format == "hf-clip" ? 40 : 80))
        {
            File.WriteAllBytes(path, fuzz.Bytes);
            run.Case(fuzz.Label, () =>
            {
                var result = ModelImport.Run(new ModelImportRequest(format, path, dir.Combine("model")));
                ModelDirectory.Load(result.Directory).Model.Dispose();
            }, [path], Refusals);
        }
        run.Finish();
    }

    /// <summary>The import format of the fixtures that hold one model (the others hold training state or every dtype).</summary>
    private static string? ImportFormat(string fixture) => fixture switch
    {
        "beit_unilm.pth" or "beit_unilm_legacy.pth" => "unilm-beit",
        "clip_vit_tiny.pt" => "openai-clip",
        "dall_e_encoder.pkl" => "dall-e",
        _ => null,
    };

    [Theory]
    [MemberData(nameof(CheckpointFixtures))]
    public void Damaged_checkpoints_are_read_exactly_or_refused_naming_the_file(string fixture)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun(fixture, output);
        byte[] original = File.ReadAllBytes(RepositoryFiles.PathOf("tests", "fixtures", "checkpoints", fixture));
        // The pickles and the zip's directory entries are where a reader's decisions are made.
        var hotSpots = Mutations.Find(original, "data.pkl"u8).Concat(Mutations.Find(original, "PK\u0001\u0002"u8)).Concat(Mutations.Find(original, [0x80, 0x02])).ToList();
        string path = dir.Combine(fixture);
        string? format = ImportFormat(fixture);
        int index = 0;
        foreach (var fuzz in Mutations.Of(original, fixture.Length * 7919, 200, hotSpots))
        {
            File.WriteAllBytes(path, fuzz.Bytes);
            run.Case(fuzz.Label, () => ReadCheckpoint(path), [path], Refusals);
            // Every fourth case also goes through the import: the configuration read off the damaged tensors, the
            // model built from it and loaded strictly, and the directory written read back.
            if (format is not null && index++ % 4 == 0)
                run.Case($"import {fuzz.Label}", () =>
                {
                    var result = ModelImport.Run(new ModelImportRequest(format, path, dir.Combine("model")));
                    ModelDirectory.Load(result.Directory).Model.Dispose();
                }, [path], Refusals);
        }
        run.Finish();
    }
}
