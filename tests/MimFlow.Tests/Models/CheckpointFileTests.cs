using System.IO.Compression;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Interop.Checkpoints;
using MimFlow.Models.Tokenizers;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

/// <summary>
/// PyTorch checkpoints read without Python: each committed fixture (tests/fixtures/checkpoints, made by
/// make_fixtures.py with PyTorch 1.13) against the float32 safetensors reference written next to it.
/// </summary>
public sealed class CheckpointFileTests
{
    public CheckpointFileTests() => TorchBackend.EnsureLoaded();

    internal static string Fixture(string name) => RepositoryFiles.PathOf("tests", "fixtures", "checkpoints", name);

    [Theory]
    [InlineData("beit_unilm.pth", "beit_unilm.ref.safetensors", "pytorch-zip")]
    [InlineData("beit_unilm_legacy.pth", "beit_unilm.ref.safetensors", "pytorch-legacy")]
    [InlineData("dino_checkpoint.pth", "dino_checkpoint.ref.safetensors", "pytorch-zip")]
    [InlineData("dtypes.pth", "dtypes.ref.safetensors", "pytorch-zip")]
    [InlineData("dtypes_protocol4.pth", "dtypes.ref.safetensors", "pytorch-zip")]
    [InlineData("clip_vit_tiny.pt", "clip_vit_tiny.ref.safetensors", "torchscript")]
    [InlineData("dall_e_encoder.pkl", "dall_e_encoder.ref.safetensors", "pytorch-zip")]
    public void Each_format_opens_with_the_names_shapes_and_values_of_its_reference(string fixture, string reference, string format)
    {
        using var checkpoint = CheckpointFile.Open(Fixture(fixture));
        using var expected = CheckpointFile.Open(Fixture(reference));
        Assert.Equal(format, checkpoint.Format);
        Assert.Equal("safetensors", expected.Format);
        AssertSameTensors(expected, checkpoint);
    }

    internal static void AssertSameTensors(INamedTensors expected, INamedTensors actual)
    {
        Assert.Equal(expected.Names.ToList(), actual.Names.ToList());
        foreach (string name in expected.Names)
        {
            Assert.Equal(expected.ShapeOf(name), actual.ShapeOf(name));
            using var want = expected.Read(name);
            using var got = actual.Read(name);
            Assert.Equal(ScalarType.Float32, got.dtype);
            Assert.Equal(want.shape, got.shape);
            Assert.True(want.allclose(got, 0, 0), $"{name}: values differ from the reference");
        }
    }

    [Fact]
    public void Views_into_shared_storages_and_every_dtype_read_exactly()
    {
        using var checkpoint = CheckpointFile.Open(Fixture("beit_unilm.pth"));
        // q_bias and v_bias are two halves of one storage: v_bias starts at a non-zero offset.
        using var q = checkpoint.Read("blocks.0.attn.q_bias");
        using var v = checkpoint.Read("blocks.0.attn.v_bias");
        Assert.False(q.allclose(v, 0, 0));
        using var dtypes = CheckpointFile.Open(Fixture("dtypes.pth"));
        using var f32 = dtypes.Read("f32");
        using var f16 = dtypes.Read("f16");
        using var bf16 = dtypes.Read("bf16");
        using var halfOfF32 = f32.to(ScalarType.Float16).to(ScalarType.Float32);
        using var bfloatOfF32 = f32.to(ScalarType.BFloat16).to(ScalarType.Float32);
        Assert.True(f16.allclose(halfOfF32, 0, 0));
        Assert.True(bf16.allclose(bfloatOfF32, 0, 0));
        using var integers = dtypes.Read("i64");
        Assert.Equal(Enumerable.Range(-6, 12).Select(i => (float)i).ToArray(), integers.data<float>().ToArray());
        using var bytes = dtypes.Read("u8");
        Assert.Equal([250f, 251, 252, 253, 254, 255], bytes.data<float>().ToArray());
        Assert.Equal([3L, 5], dtypes.ShapeOf("expanded"));
        Assert.Equal([0L, 4], dtypes.ShapeOf("empty"));
        Assert.Empty(dtypes.ShapeOf("scalar"));
        using var scalar = dtypes.Read("scalar");
        Assert.Equal(2.5f, scalar.item<float>());
    }

    [Fact]
    public void A_wrapped_unilm_checkpoint_leaves_out_its_training_state_and_strips_module()
    {
        using var checkpoint = CheckpointFile.Open(Fixture("beit_unilm.pth"));
        Assert.Equal(["optimizer", "epoch", "scaler", "args"], checkpoint.LeftOut);
        Assert.DoesNotContain(checkpoint.Names, name => name.StartsWith("module.", StringComparison.Ordinal));
        Assert.Contains("blocks.1.attn.relative_position_index", checkpoint.Names);
        using var legacy = CheckpointFile.Open(Fixture("beit_unilm_legacy.pth"));
        Assert.Equal(checkpoint.LeftOut, legacy.LeftOut);
    }

    [Theory]
    [InlineData("beit_unilm.pth")]
    [InlineData("beit_unilm_legacy.pth")]
    public void A_unilm_beit_pth_imports_and_forwards_exactly_as_its_safetensors_reference(string fixture)
    {
        using var dir = new TemporaryDirectory();
        var fromPickle = ModelImport.Run(new ModelImportRequest("unilm-beit", Fixture(fixture), dir.Combine("pickle")));
        var fromReference = ModelImport.Run(new ModelImportRequest("unilm-beit", Fixture("beit_unilm.ref.safetensors"), dir.Combine("reference")));
        Assert.Equal(fromReference.Spec, fromPickle.Spec);
        Assert.Equal(fromReference.Tensors, fromPickle.Tensors);
        foreach (string entry in new[] { "optimizer", "args", "epoch", "scaler", "lm_head.weight", "blocks.0.attn.relative_position_index" })
            Assert.Contains(entry, fromPickle.LeftOut);
        Assert.Equal(File.ReadAllBytes(dir.Combine("reference", "weights.safetensors")), File.ReadAllBytes(dir.Combine("pickle", "weights.safetensors")));

        var (_, pickled) = ModelDirectory.LoadVit(dir.Combine("pickle"));
        var (_, referenced) = ModelDirectory.LoadVit(dir.Combine("reference"));
        using (pickled)
        using (referenced)
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            pickled.eval();
            referenced.eval();
            var pixels = randn([2, 3, 32, 32], generator: new Generator(5));
            var features = pickled.ForwardFeatures(pixels);
            Assert.True(features.allclose(referenced.ForwardFeatures(pixels), 0, 0));
            Assert.True(pickled.ForwardHead(features).allclose(referenced.ForwardHead(features), 0, 0));
        }
    }

    [Fact]
    public void A_torchscript_clip_imports_as_openai_clip_without_its_text_tower()
    {
        using var dir = new TemporaryDirectory();
        var fromScript = ModelImport.Run(new ModelImportRequest("openai-clip", Fixture("clip_vit_tiny.pt"), dir.Combine("script")));
        ModelImport.Run(new ModelImportRequest("openai-clip", Fixture("clip_vit_tiny.ref.safetensors"), dir.Combine("reference")));
        Assert.Equal("torchscript", fromScript.Format);
        Assert.Equal(8, fromScript.Spec.Config!.PatchSize);
        Assert.Equal(64, fromScript.Spec.Config.EmbedDim);
        Assert.Contains("token_embedding.weight", fromScript.LeftOut);
        Assert.Contains("transformer.resblocks.0.attn.in_proj_weight", fromScript.LeftOut);
        Assert.Contains("logit_scale", fromScript.LeftOut);
        var (_, script) = ModelDirectory.LoadVit(dir.Combine("script"));
        var (_, reference) = ModelDirectory.LoadVit(dir.Combine("reference"));
        using (script)
        using (reference)
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            script.eval();
            reference.eval();
            var pixels = randn([2, 3, 16, 16], generator: new Generator(6));
            Assert.True(script.forward(pixels).allclose(reference.forward(pixels), 0, 0));
        }
    }

    [Fact]
    public void A_pickled_dall_e_encoder_module_imports_as_dall_e_without_its_classes()
    {
        using var dir = new TemporaryDirectory();
        var fromPickle = ModelImport.Run(new ModelImportRequest("dall-e", Fixture("dall_e_encoder.pkl"), dir.Combine("pickle")));
        ModelImport.Run(new ModelImportRequest("dall-e", Fixture("dall_e_encoder.ref.safetensors"), dir.Combine("reference")));
        Assert.Equal(new DalleEncoderConfig(GroupCount: 3, HiddenSize: 8, BlocksPerGroup: 2, VocabSize: 16), fromPickle.Spec.Dvae);
        Assert.Empty(fromPickle.LeftOut);
        var (_, pickled) = ModelDirectory.Load(dir.Combine("pickle"));
        var (_, referenced) = ModelDirectory.Load(dir.Combine("reference"));
        using (pickled)
        using (referenced)
        using (var scope = NewDisposeScope())
        {
            var pixels = rand([2, 3, 16, 16], generator: new Generator(7));
            var logits = ((DalleEncoder)pickled).Logits(DalleEncoder.MapPixels(pixels));
            Assert.True(logits.allclose(((DalleEncoder)referenced).Logits(DalleEncoder.MapPixels(pixels)), 0, 0));
        }
    }

    [Fact]
    public void A_dino_checkpoint_gives_its_teacher_backbone_and_leaves_out_student_head_and_training_state()
    {
        using var checkpoint = CheckpointFile.Open(Fixture("dino_checkpoint.pth"));
        Assert.Contains("cls_token", checkpoint.Names);
        Assert.DoesNotContain(checkpoint.Names, name => name.StartsWith("backbone.", StringComparison.Ordinal) || name.StartsWith("head.", StringComparison.Ordinal));
        foreach (string entry in new[] { "student", "optimizer", "epoch", "args", "dino_loss", "fp16_scaler", "head.mlp.0.weight", "head.last_layer.weight_v" })
            Assert.Contains(entry, checkpoint.LeftOut);

        // The student, chosen by key: under DDP ("module.backbone.…"), stripped the same way, and other weights.
        using var student = CheckpointFile.Open(Fixture("dino_checkpoint.pth"), new CheckpointReadOptions("student"));
        Assert.Equal(checkpoint.Names.ToList(), student.Names.ToList());
        Assert.Contains("teacher", student.LeftOut);
        using var teacherToken = checkpoint.Read("cls_token");
        using var studentToken = student.Read("cls_token");
        Assert.False(teacherToken.allclose(studentToken, 0, 0));
    }

    [Fact]
    public void A_state_dict_key_selects_an_entry_and_a_wrong_one_names_the_entries_there_are()
    {
        using var byKey = CheckpointFile.Open(Fixture("beit_unilm.pth"), new CheckpointReadOptions("model"));
        using var reference = CheckpointFile.Open(Fixture("beit_unilm.ref.safetensors"));
        AssertSameTensors(reference, byKey);
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(Fixture("beit_unilm.pth"), new CheckpointReadOptions("model_ema")));
        Assert.Contains("beit_unilm.pth", error.Message);
        Assert.Contains("[model, optimizer, epoch, scaler, args]", error.Message);
        Assert.Throws<ArgumentException>(() => CheckpointFile.Open(Fixture("beit_unilm.ref.safetensors"), new CheckpointReadOptions("model")));
    }

    [Fact]
    public void Formats_are_detected_by_content_not_by_extension()
    {
        using var dir = new TemporaryDirectory();
        string safetensorsAsPth = dir.Combine("weights.pth"), zipAsSafetensors = dir.Combine("weights.safetensors"), legacyAsBin = dir.Combine("weights.bin");
        File.Copy(Fixture("beit_unilm.ref.safetensors"), safetensorsAsPth);
        File.Copy(Fixture("beit_unilm.pth"), zipAsSafetensors);
        File.Copy(Fixture("beit_unilm_legacy.pth"), legacyAsBin);
        using var first = CheckpointFile.Open(safetensorsAsPth);
        using var second = CheckpointFile.Open(zipAsSafetensors);
        using var third = CheckpointFile.Open(legacyAsBin);
        Assert.Equal(["safetensors", "pytorch-zip", "pytorch-legacy"], new[] { first.Format, second.Format, third.Format });
        AssertSameTensors(first, second);
        AssertSameTensors(first, third);
    }

    [Fact]
    public void Reading_after_dispose_and_a_cancelled_open_are_exceptions_not_crashes()
    {
        var checkpoint = CheckpointFile.Open(Fixture("beit_unilm.pth"));
        checkpoint.Dispose();
        Assert.Throws<ObjectDisposedException>(() => checkpoint.Read("cls_token").Dispose());
        Assert.ThrowsAny<OperationCanceledException>(() => CheckpointFile.Open(Fixture("beit_unilm.pth"), cancellationToken: new CancellationToken(true)).Dispose());
    }

    [Fact]
    public void A_deflated_archive_reads_as_the_stored_one()
    {
        // PyTorch stores members uncompressed; an archive re-packed by a zip tool has them deflated.
        using var dir = new TemporaryDirectory();
        string repacked = dir.Combine("deflated.pth");
        TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), repacked, level: CompressionLevel.Optimal);
        using var original = CheckpointFile.Open(Fixture("beit_unilm.pth"));
        using var deflated = CheckpointFile.Open(repacked);
        AssertSameTensors(original, deflated);
    }
}

/// <summary>Zip checkpoints written or re-packed in the tests (System.IO.Compression computes the CRCs).</summary>
internal static class TorchZipFixtures
{
    /// <summary>Copies a zip checkpoint member by member; <paramref name="change"/> may drop (null) or replace a member's bytes.</summary>
    public static void Repack(string source, string target, Func<string, byte[], byte[]?>? change = null, CompressionLevel level = CompressionLevel.NoCompression,
        IEnumerable<(string Name, byte[] Bytes)>? extra = null)
    {
        using var input = ZipFile.OpenRead(source);
        using var output = ZipFile.Open(target, ZipArchiveMode.Create);
        foreach (var entry in input.Entries)
        {
            byte[] bytes;
            using (var stream = entry.Open())
            using (var buffer = new MemoryStream())
            {
                stream.CopyTo(buffer);
                bytes = buffer.ToArray();
            }
            var changed = change is null ? bytes : change(entry.FullName, bytes);
            if (changed is not null) Add(output, entry.FullName, changed, level);
        }
        foreach (var (name, bytes) in extra ?? []) Add(output, name, bytes, level);
    }

    /// <summary>A torch.save-shaped archive: archive/data.pkl, archive/data/KEY for each storage, archive/version.</summary>
    public static void Write(string target, byte[] dataPickle, params (string Key, byte[] Bytes)[] storages)
    {
        using var output = ZipFile.Open(target, ZipArchiveMode.Create);
        Add(output, "archive/data.pkl", dataPickle, CompressionLevel.NoCompression);
        foreach (var (key, bytes) in storages) Add(output, $"archive/data/{key}", bytes, CompressionLevel.NoCompression);
        Add(output, "archive/version", "3\n"u8.ToArray(), CompressionLevel.NoCompression);
    }

    private static void Add(ZipArchive archive, string name, byte[] bytes, CompressionLevel level)
    {
        using var stream = archive.CreateEntry(name, level).Open();
        stream.Write(bytes);
    }
}
