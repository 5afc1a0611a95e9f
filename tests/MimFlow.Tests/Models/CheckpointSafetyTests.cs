using System.Buffers.Binary;
using System.Text;
using MimFlow.Models.Interop.Checkpoints;
using MimFlow.Torch.Backend;

namespace MimFlow.Tests.Models;

/// <summary>
/// A pickle is a program in Python: these tests give the checkpoint reader hostile and damaged files and check
/// that it refuses them in one clear line naming the file (and the global), without running anything.
/// </summary>
public sealed class CheckpointSafetyTests
{
    /// <summary>Where the committed malicious pickles would create a file if anything ran them (make_fixtures.py).</summary>
    private const string Marker = "/tmp/mimflow-pickle-marker";

    public CheckpointSafetyTests() => TorchBackend.EnsureLoaded();

    private static string Fixture(string name) => CheckpointFileTests.Fixture(name);

    [Theory]
    [InlineData("evil_system.pth", "posix.system")]
    [InlineData("evil_eval.pth", "builtins.eval")]
    [InlineData("evil_nested_legacy.pth", "posix.system")]
    public void Malicious_pickles_are_refused_naming_the_global_and_nothing_runs(string fixture, string global)
    {
        if (File.Exists(Marker)) File.Delete(Marker);
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(Fixture(fixture)).Dispose());
        Assert.Equal($"{Fixture(fixture)}: refused to load: the pickle calls {global}, which is not a tensor or container type", error.Message);
        Assert.False(File.Exists(Marker), "the payload ran");
    }

    [Fact]
    public void Calls_hidden_in_other_opcodes_and_admitted_wrappers_are_refused_too()
    {
        using var dir = new TemporaryDirectory();
        var cases = new (string Name, byte[] Pickle, string Global)[]
        {
            // INST: protocol 0's "instantiate module.name with the marked arguments".
            ("inst", new Pickle(0).Mark().Text("touch x").Inst("os", "system").Stop(), "os.system"),
            // STACK_GLOBAL (protocol 4) then REDUCE.
            ("stack-global", new Pickle(4).Text("subprocess").Text("Popen").StackGlobal().Text("ls").Tuple1().Reduce().Stop(), "subprocess.Popen"),
            // torch's own rebuild-from-type wrapper asked to call something else.
            ("from-type", new Pickle(2).Global("torch._tensor", "_rebuild_from_type_v2").Mark().Global("posix", "system").Global("torch", "Tensor")
                .Text("touch x").Tuple1().EmptyDict().Tuple().Reduce().Stop(), "posix.system through torch._tensor._rebuild_from_type_v2"),
            // copyreg._reconstructor runs base.__new__/__init__: only object is harmless.
            ("reconstructor", new Pickle(2).Global("copyreg", "_reconstructor").Global("argparse", "Namespace").Global("posix", "system").Text("touch x")
                .Tuple3().Reduce().Stop(), "copyreg._reconstructor with base posix.system"),
            // Python 2 spelling of builtins.
            ("python2-builtin", new Pickle(2).Global("__builtin__", "exec").Text("print(1)").Tuple1().Reduce().Stop(), "builtins.exec"),
            // SETITEM on something that is not a container would call its __setitem__.
            ("setitem", new Pickle(2).Global("posix", "environ").Text("key").Text("value").SetItem().Stop(), "posix.environ.__setitem__"),
        };
        foreach (var (name, pickle, global) in cases)
        {
            string path = dir.Combine(name + ".pth");
            TorchZipFixtures.Write(path, pickle);
            var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(path).Dispose());
            Assert.Equal($"{path}: refused to load: the pickle calls {global}, which is not a tensor or container type", error.Message);
        }
    }

    [Fact]
    public void Argparse_namespaces_and_other_unknown_objects_become_inert_left_out_entries()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("inert.pth");
        var pickle = new Pickle(2).EmptyDict()
            .Text("model").EmptyDict().Text("w").Tensor("0", "FloatStorage", 0, [2], [1]).SetItem().SetItem()
            // argparse.Namespace(lr=0.1) as protocol 2 writes it: NEWOBJ then BUILD with its __dict__.
            .Text("args").Global("argparse", "Namespace").EmptyTuple().NewObj().EmptyDict().Text("lr").Float(0.1).SetItem().Build().SetItem()
            // An EasyDict-like dict subclass: NEWOBJ, then SETITEMS that Python would send to its __setitem__.
            .Text("config").Global("easydict", "EasyDict").EmptyTuple().NewObj().Text("depth").Int(2).SetItem().SetItem()
            .Text("device").Global("torch", "device").Text("cuda").Tuple1().Reduce().SetItem()
            .Stop();
        TorchZipFixtures.Write(path, pickle, ("0", FloatBytes(1.5f, -2f)));
        using var checkpoint = CheckpointFile.Open(path);
        Assert.Equal(["w"], checkpoint.Names);
        Assert.Equal(["args", "config", "device"], checkpoint.LeftOut);
        using var w = checkpoint.Read("w");
        Assert.Equal([1.5f, -2f], w.data<float>().ToArray());
    }

    [Fact]
    public void A_module_tree_that_contains_itself_is_refused_not_followed_forever()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("cycle.pth");
        // A module whose _modules maps "child" to the module itself (memo 0).
        var pickle = new Pickle(2).Global("torch.nn.modules.module", "Module").EmptyTuple().NewObj().Put(0)
            .EmptyDict().Text("_parameters").EmptyDict().SetItem().Text("_modules").EmptyDict().Text("child").Get(0).SetItem().SetItem()
            .Build().Stop();
        TorchZipFixtures.Write(path, pickle);
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(path).Dispose());
        Assert.StartsWith(path + ": the module tree contains itself", error.Message);
    }

    [Fact]
    public void Deeply_nested_metadata_neither_overflows_the_stack_nor_is_walked()
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("deep.pth");
        var pickle = new Pickle(2).EmptyDict().Text("model").EmptyDict().Text("w").Tensor("0", "FloatStorage", 0, [1], [1]).SetItem().SetItem()
            .Text("history");
        for (int i = 0; i < 200_000; i++) pickle.EmptyList();
        for (int i = 0; i < 200_000 - 1; i++) pickle.Append();
        TorchZipFixtures.Write(path, pickle.SetItem().Stop(), ("0", FloatBytes(3f)));
        using var checkpoint = CheckpointFile.Open(path);
        Assert.Equal(["history"], checkpoint.LeftOut);
    }

    [Theory]
    [InlineData(0, new long[] { 2, 3 }, new long[] { 3, 1 }, "need 24 bytes of storage '0', which has 16")]
    [InlineData(3, new long[] { 2 }, new long[] { 1 }, "need 20 bytes of storage '0', which has 16")]
    [InlineData(0, new long[] { 1L << 62, 4 }, new long[] { 1L << 62, 1 }, "overflow 64-bit arithmetic")]
    [InlineData(0, new long[] { 2 }, new long[] { -1 }, "a negative offset, size or stride")]
    public void A_tensor_that_does_not_fit_its_storage_is_refused(long offset, long[] shape, long[] stride, string reason)
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("overrun.pth");
        var pickle = new Pickle(2).EmptyDict().Text("w").Tensor("0", "FloatStorage", offset, shape, stride, elements: 4).SetItem().Stop();
        TorchZipFixtures.Write(path, pickle, ("0", FloatBytes(1, 2, 3, 4)));
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(path).Dispose());
        Assert.StartsWith(path + ": a tensor does not fit its storage", error.Message);
        Assert.Contains(reason, error.Message);
    }

    public static TheoryData<string, string> Damages => new()
    {
        { "truncated-half", "truncated" },
        { "truncated-tail", "truncated" },
        { "missing-storage", "storage '3' is missing from the archive" },
        { "short-storage", "storage '0' declares" },
        { "unknown-opcode", "unknown opcode 0xff" },
        { "cut-pickle", "not a valid pickle" },
        { "flipped-pickle", "CRC-32" },
        { "big-endian", "big-endian" },
        { "legacy-truncated", "truncated" },
        { "empty", "the file is empty" },
        { "text", "not a checkpoint format MimFlow reads" },
        { "zip-without-pickle", "no <archive>/data.pkl" },
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public void Damaged_files_are_one_error_naming_the_file_and_the_reason(string damage, string reason)
    {
        using var dir = new TemporaryDirectory();
        string path = dir.Combine(damage + ".pth");
        byte[] good = File.ReadAllBytes(Fixture("beit_unilm.pth"));
        switch (damage)
        {
            case "truncated-half": File.WriteAllBytes(path, good[..(good.Length / 2)]); break;
            case "truncated-tail": File.WriteAllBytes(path, good[..^10]); break;
            case "missing-storage": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, (name, bytes) => name.EndsWith("/data/3", StringComparison.Ordinal) ? null : bytes); break;
            case "short-storage": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, (name, bytes) => name.EndsWith("/data/0", StringComparison.Ordinal) ? bytes[..^4] : bytes); break;
            case "unknown-opcode": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, (name, bytes) => name.EndsWith("data.pkl", StringComparison.Ordinal) ? [.. bytes[..2], 0xff, .. bytes[2..]] : bytes); break;
            case "cut-pickle": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, (name, bytes) => name.EndsWith("data.pkl", StringComparison.Ordinal) ? bytes[..(bytes.Length / 2)] : bytes); break;
            case "flipped-pickle":
                // data.pkl is stored first and uncompressed: flipping a letter of its first global breaks its CRC.
                good[IndexOf(good, "collections"u8.ToArray())] ^= 0x20;
                File.WriteAllBytes(path, good);
                break;
            case "big-endian": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, extra: [("beit_unilm/byteorder", "big"u8.ToArray())]); break;
            case "legacy-truncated": byte[] legacy = File.ReadAllBytes(Fixture("beit_unilm_legacy.pth")); File.WriteAllBytes(path, legacy[..^100]); break;
            case "empty": File.WriteAllBytes(path, []); break;
            case "text": File.WriteAllText(path, "this is not a checkpoint\n"); break;
            case "zip-without-pickle": TorchZipFixtures.Repack(Fixture("beit_unilm.pth"), path, (name, bytes) => name.EndsWith("data.pkl", StringComparison.Ordinal) ? null : bytes); break;
        }
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(path).Dispose());
        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains(reason, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void The_legacy_format_refuses_a_storage_section_cut_short_at_open()
    {
        // The storages follow the pickles; a file cut inside them must fail when opened, not when a tensor is read.
        using var dir = new TemporaryDirectory();
        string path = dir.Combine("cut.pth");
        byte[] legacy = File.ReadAllBytes(Fixture("beit_unilm_legacy.pth"));
        File.WriteAllBytes(path, legacy[..^1]);
        var error = Assert.Throws<InvalidDataException>(() => CheckpointFile.Open(path).Dispose());
        Assert.Contains("the storage section ends inside storage", error.Message);
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("pattern not found");
    }

    private static byte[] FloatBytes(params float[] values)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]);
        return bytes;
    }

    /// <summary>Writes pickle opcodes by hand, to make pickles Python's pickler would not (or that are hostile).</summary>
    private sealed class Pickle
    {
        private readonly List<byte> bytes = [];

        public Pickle(int protocol)
        {
            if (protocol >= 2) bytes.AddRange([0x80, (byte)protocol]);
        }

        public static implicit operator byte[](Pickle pickle) => [.. pickle.bytes];

        private Pickle Op(params byte[] code)
        {
            bytes.AddRange(code);
            return this;
        }

        private Pickle Line(string text) => Op([.. Encoding.ASCII.GetBytes(text), (byte)'\n']);

        public Pickle Mark() => Op((byte)'(');
        public Pickle Stop() => Op((byte)'.');
        public Pickle EmptyDict() => Op((byte)'}');
        public Pickle EmptyList() => Op((byte)']');
        public Pickle EmptyTuple() => Op((byte)')');
        public Pickle Append() => Op((byte)'a');
        public Pickle SetItem() => Op((byte)'s');
        public Pickle Tuple1() => Op(0x85);
        public Pickle Reduce() => Op((byte)'R');
        public Pickle NewObj() => Op(0x81);
        public Pickle Build() => Op((byte)'b');
        public Pickle StackGlobal() => Op(0x93);
        public Pickle Put(byte index) => Op((byte)'q', index);
        public Pickle Get(byte index) => Op((byte)'h', index);
        public Pickle Global(string module, string name) => Op((byte)'c').Line(module).Line(name);
        public Pickle Inst(string module, string name) => Op((byte)'i').Line(module).Line(name);
        public Pickle Float(double value) => Op([(byte)'G', .. BitConverter.GetBytes(BinaryPrimitives.ReverseEndianness(BitConverter.DoubleToInt64Bits(value)))]);

        public Pickle Int(long value)
        {
            var payload = new byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(payload, value);
            return Op([0x8a, 8, .. payload]); // LONG1 with 8 bytes
        }

        public Pickle Text(string text)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(text);
            var length = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(length, utf8.Length);
            return Op([(byte)'X', .. length, .. utf8]);
        }

        /// <summary>TUPLE: the items since the last MARK.</summary>
        public Pickle Tuple() => Op((byte)'t');

        public Pickle Tuple3() => Op(0x87);

        /// <summary>torch._utils._rebuild_tensor_v2(storage, offset, sizes, strides, False, OrderedDict()).</summary>
        public Pickle Tensor(string key, string storageClass, long offset, long[] shape, long[] stride, long elements = -1)
        {
            Global("torch._utils", "_rebuild_tensor_v2").Mark();
            Mark().Text("storage").Global("torch", storageClass).Text(key).Text("cpu").Int(elements >= 0 ? elements : shape.Aggregate(1L, (a, b) => a * b)).Op((byte)'t').Op((byte)'Q');
            Int(offset);
            Mark();
            foreach (long size in shape) Int(size);
            Op((byte)'t').Mark();
            foreach (long step in stride) Int(step);
            Op((byte)'t').Op(0x89).Global("collections", "OrderedDict").EmptyTuple().Reduce();
            return Op((byte)'t').Reduce();
        }
    }
}
