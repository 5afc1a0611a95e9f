using MimFlow.Core.IO;
using MimFlow.Data.Masking;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Shards;
using MimFlow.Tests.Core;
using MimFlow.Tests.Precompute;
using MimFlow.Torch.Backend;
using MimFlow.Training.Feeding;
using MimFlow.Training.Runs;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

/// <summary>
/// Transient I/O faults (EIO, as a network file system gives them) injected into shard reads, shard writes, checkpoint
/// writes and metrics appends: each is retried, the result is exactly that of a run without faults, and a fault that
/// persists ends the run naming the file.
/// </summary>
public sealed class TransientFaultTests
{
    private static readonly TimeSpan Fast = TimeSpan.FromMilliseconds(1);

    private static TransientIo Io(IFileOpener files, List<string>? log = null) => new(attempts: 4, firstDelay: Fast, log: line => log?.Add(line), files: files);

    private static FeederOptions Options(TransientIo? io = null) => new()
    {
        BatchSize = 3, Seed = 5, ShuffleBuffer = 4, DecodeWorkers = 2, Masks = new BlockwiseMaskGenerator(4, 4, MaskedPatches: 6, MinBlockPatches: 2), Io = io,
    };

    private static async Task<List<TrainingBatch>> Epoch(ShardFeeder feeder)
    {
        var batches = new List<TrainingBatch>();
        await foreach (var batch in feeder.ReadEpochAsync(0)) batches.Add(batch);
        return batches;
    }

    [Fact]
    public async Task Feeder_shard_reads_retry_transient_faults_with_the_same_batches_and_a_persistent_fault_names_the_shard()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { TeacherDirectory = null });
        var manifest = ShardManifest.Read(shards);
        Assert.True(manifest.Shards.Count >= 2);
        var clean = await Epoch(new ShardFeeder(shards, Options()));

        string target = Path.Combine(shards, manifest.Shards[^1].Name);
        // At the open (hash and rows), and in the middle of the rows once the hash has read the file (skipping its stream).
        foreach (var files in new[]
                 {
                     new FaultyFiles(p => p == target, FaultAt.Open, failures: 3),
                     new FaultyFiles(p => p == target, FaultAt.Read, failures: 3, afterBytes: 3_000, skipOpens: 1),
                 })
        {
            var log = new List<string>();
            var io = Io(files, log);
            var faulty = await Epoch(new ShardFeeder(shards, Options(io)));
            Assert.Equal(3, files.Struck);
            Assert.Equal(3, io.Retries);
            Assert.All(log, line => Assert.Contains(target, line));
            Assert.Equal(clean.Count, faulty.Count);
            for (int i = 0; i < clean.Count; i++)
            {
                Assert.Equal(clean[i].SampleIds, faulty[i].SampleIds);
                Assert.Equal(clean[i].Pixels, faulty[i].Pixels);
                Assert.Equal(clean[i].Codes, faulty[i].Codes);
                Assert.Equal(clean[i].Masks, faulty[i].Masks);
            }
        }

        var persistent = new FaultyFiles(p => p == target, FaultAt.Read, failures: int.MaxValue, afterBytes: 3_000, skipOpens: 1);
        var error = await Assert.ThrowsAsync<PersistentIoException>(() => Epoch(new ShardFeeder(shards, Options(Io(persistent)))));
        Assert.Contains(target, error.Message);
        Assert.Contains("Input/output error", error.Message);
    }

    [Fact]
    public async Task Tokenize_rewrites_a_shard_whole_after_a_transient_write_fault_with_the_same_bytes_and_a_persistent_fault_names_it()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string clean = fixture.Combine("clean");
        var request = fixture.Request(clean) with { TeacherDirectory = null };
        var expected = (await TokenizeJob.RunAsync(request)).Manifest;
        Assert.True(expected.Shards.Count >= 2);

        var files = new FaultyFiles(p => p.EndsWith(".parquet", StringComparison.Ordinal), FaultAt.Write, failures: 3, afterBytes: 5_000);
        var lines = new List<string>();
        var io = Io(files, lines);
        var faulty = (await TokenizeJob.RunAsync(request with { OutputDirectory = fixture.Combine("faulty"), Io = io })).Manifest;
        Assert.True(files.Struck >= 3, $"{files.Struck} faults; shards of {string.Join(", ", expected.Shards.Select(s => s.Bytes))} bytes");
        // A fault may also strike the footer of the abandoned temporary file, which is deleted anyway: not a retry.
        Assert.True(io.Retries >= 2, $"{io.Retries} retries, {files.Struck} faults: {string.Join(" | ", lines)}");
        Assert.All(lines, line => Assert.Contains(fixture.Combine("faulty", "part-"), line));
        Assert.Equal(expected.Shards, faulty.Shards);
        foreach (var shard in expected.Shards)
            Assert.Equal(File.ReadAllBytes(Path.Combine(clean, shard.Name)), File.ReadAllBytes(fixture.Combine("faulty", shard.Name)));

        string broken = fixture.Combine("broken");
        var persistent = new FaultyFiles(p => p.EndsWith(".parquet", StringComparison.Ordinal), FaultAt.Write, failures: int.MaxValue, afterBytes: 5_000);
        var error = await Assert.ThrowsAsync<PersistentIoException>(() => TokenizeJob.RunAsync(request with { OutputDirectory = broken, Io = Io(persistent) }));
        Assert.Contains(Path.Combine(broken, expected.Shards[0].Name), error.Message);
        Assert.False(File.Exists(Path.Combine(broken, ShardManifest.FileName)));
        Assert.Empty(Directory.EnumerateFiles(broken, "*.parquet"));
        Assert.Empty(Directory.EnumerateFiles(broken, ".*partial*"));
    }

    [Fact]
    public void A_checkpoint_is_built_again_after_a_transient_fault_with_the_same_files_and_a_persistent_fault_names_it()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 };
        var spec = new ModelSpec("beit-test", Config: config);
        using var model = ModelCatalog.Create(spec, seed: 3);
        var state = new TrainerState(2, 0, 2, 0, "beit", "beit-test", 7);
        using var moment = ones(3);
        var optimizer = new Dictionary<string, Tensor> { ["0.exp_avg"] = moment };
        string Save(string run, TransientIo? io) => new CheckpointStore(run, io: io).Save(state, spec, model, model, optimizer);

        string clean = Save(dir.Combine("clean"), null);
        var files = new FaultyFiles(p => p.EndsWith("training.safetensors", StringComparison.Ordinal), FaultAt.Read, failures: 2);
        var io = Io(files);
        string faulty = Save(dir.Combine("faulty"), io);
        Assert.Equal(2, files.Struck);
        Assert.Equal(2, io.Retries);
        var names = Directory.EnumerateFiles(clean, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(clean, f)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(names, Directory.EnumerateFiles(faulty, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(faulty, f)).Order(StringComparer.Ordinal));
        foreach (string name in names) Assert.Equal(File.ReadAllBytes(Path.Combine(clean, name)), File.ReadAllBytes(Path.Combine(faulty, name)));
        Assert.Single(Directory.EnumerateDirectories(Path.Combine(dir.Combine("faulty"), "checkpoints")));
        CheckpointStore.Restore(faulty, model);

        string broken = dir.Combine("broken");
        var persistent = new FaultyFiles(p => p.EndsWith("training.safetensors", StringComparison.Ordinal), FaultAt.Read, failures: int.MaxValue);
        var error = Assert.Throws<PersistentIoException>(() => Save(broken, Io(persistent)));
        Assert.Contains(Path.Combine(broken, "checkpoints", "step-00000002"), error.Message);
        Assert.Contains("training.safetensors", error.Message);
        Assert.Null(new CheckpointStore(broken).Latest());
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(broken, "checkpoints")));
    }

    [Fact]
    public void A_metrics_line_is_written_again_at_its_own_offset_after_a_transient_fault()
    {
        using var dir = new TemporaryDirectory();
        var files = new FaultyFiles(p => p.EndsWith(MetricsLog.FileName, StringComparison.Ordinal), FaultAt.Write, failures: 2, afterBytes: 30);
        var io = Io(files);
        var clock = new FixedClock(new DateTimeOffset(2026, 12, 1, 12, 0, 0, TimeSpan.Zero));
        using (var log = MetricsLog.Open(dir.Path, null, io: io, clock: clock))
            for (int step = 0; step < 5; step++)
                log.Write(new Dictionary<string, object> { ["step"] = step, ["loss"] = 0.5 });
        Assert.Equal(2, files.Struck);
        Assert.Equal(Enumerable.Range(0, 5).Select(s => $"{{\"step\":{s},\"loss\":0.5,\"world_size\":1,\"time\":\"2026-12-01T12:00:00.000Z\"}}"), File.ReadAllLines(dir.Combine(MetricsLog.FileName)));

        var persistent = new FaultyFiles(p => p.EndsWith(MetricsLog.FileName, StringComparison.Ordinal), FaultAt.Write, failures: int.MaxValue);
        Directory.CreateDirectory(dir.Combine("broken"));
        using var broken = MetricsLog.Open(dir.Combine("broken"), null, io: Io(persistent));
        var error = Assert.Throws<PersistentIoException>(() => broken.Write(new Dictionary<string, object> { ["step"] = 0 }));
        Assert.Contains(dir.Combine("broken", MetricsLog.FileName), error.Message);
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }
}
