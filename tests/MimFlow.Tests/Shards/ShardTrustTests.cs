using System.Text.Json.Nodes;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Shards;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Pretraining;

namespace MimFlow.Tests.Shards;

/// <summary>Training verifies what it reads: a shard set that does not match its manifest ends the run naming the file.</summary>
public sealed class ShardTrustTests
{
    private static async Task<(TokenizeFixture Fixture, string Shards, string Student)> SetAsync()
    {
        var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { TeacherDirectory = null });
        string student = fixture.Combine("student");
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 3))
            ModelDirectory.Save(student, new ModelSpec("beit-test", Config: config), model);
        return (fixture, shards, student);
    }

    private static PretrainRequest Request(string shards, string student, string run) => new()
    {
        Shards = shards, Objective = "beit", Model = student, OutputDirectory = run, Steps = 4, BatchSize = 2, DecodeWorkers = 1, CheckpointEvery = 100,
    };

    private static void EditManifest(string shards, Action<JsonObject> edit)
    {
        string path = Path.Combine(shards, ShardManifest.FileName);
        var manifest = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(manifest);
        File.WriteAllText(path, manifest.ToJsonString());
    }

    [Fact]
    public async Task A_shard_with_one_flipped_byte_ends_the_run_naming_it()
    {
        var (fixture, shards, student) = await SetAsync();
        using var _ = fixture;
        string first = Path.Combine(shards, ShardManifest.Read(shards).Shards[0].Name);
        var bytes = File.ReadAllBytes(first);
        bytes[bytes.Length / 2] ^= 0x10;
        File.WriteAllBytes(first, bytes);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(Request(shards, student, fixture.Combine("run"))));
        Assert.Contains(first, error.Message);
        Assert.Contains("SHA-256", error.Message);
    }

    [Fact]
    public async Task Row_counts_that_are_wrong_negative_or_duplicated_are_refused_and_never_spin()
    {
        var (fixture, shards, student) = await SetAsync();
        using var _ = fixture;
        string original = File.ReadAllText(Path.Combine(shards, ShardManifest.FileName));
        void Restore() => File.WriteAllText(Path.Combine(shards, ShardManifest.FileName), original);

        // More rows listed than the shard holds (consistent totals): found when the shard is read.
        EditManifest(shards, m =>
        {
            var entry = m["shards"]![0]!.AsObject();
            entry["rows"] = entry["rows"]!.GetValue<long>() + 2;
            m["rows"] = m["rows"]!.GetValue<long>() + 2;
        });
        var more = await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(Request(shards, student, fixture.Combine("more"))));
        Assert.Contains("the manifest says", more.Message);
        Restore();

        EditManifest(shards, m => m["shards"]![0]!["rows"] = -2);
        Assert.Contains("negative", (await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(Request(shards, student, fixture.Combine("negative"))))).Message);
        Restore();

        EditManifest(shards, m => m["shards"]!.AsArray().Add(m["shards"]![0]!.DeepClone()));
        Assert.Contains("listed twice", (await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(Request(shards, student, fixture.Combine("twice"))))).Message);
        Restore();

        // No rows at all, or fewer than one batch: a clear refusal, not a loop at 0 %.
        EditManifest(shards, m =>
        {
            m["shards"] = new JsonArray();
            m["rows"] = 0;
        });
        var empty = Pretrainer.RunAsync(Request(shards, student, fixture.Combine("empty")));
        Assert.Same(empty, await Task.WhenAny(empty, Task.Delay(TimeSpan.FromSeconds(60))));
        Assert.Contains("too few images", (await Assert.ThrowsAsync<ArgumentException>(() => empty)).Message);
    }

    [Theory]
    [InlineData("../../outside.parquet")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/part.parquet")]
    [InlineData("..")]
    public async Task Shard_names_that_leave_the_sets_folder_are_refused_by_verify_and_pretrain(string name)
    {
        var (fixture, shards, student) = await SetAsync();
        using var _ = fixture;
        EditManifest(shards, m => m["shards"]![0]!["name"] = name);
        var report = await ShardVerifier.VerifyAsync(shards);
        Assert.False(report.Ok);
        Assert.Contains("not a file name inside the set's folder", report.Problems[0]);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => Pretrainer.RunAsync(Request(shards, student, fixture.Combine("run"))));
        Assert.Contains(name, error.Message);
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("truncated")]
    public async Task Inspect_names_a_shard_that_is_not_parquet(string damage)
    {
        var (fixture, shards, _) = await SetAsync();
        using var _ = fixture;
        string first = Path.Combine(shards, ShardManifest.Read(shards).Shards[0].Name);
        var bytes = File.ReadAllBytes(first);
        if (damage == "garbage") new Random(3).NextBytes(bytes);
        else bytes = bytes[..(bytes.Length / 2)];
        File.WriteAllBytes(first, bytes);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => ShardInspector.InspectAsync(shards, fixture.Combine("pictures")));
        Assert.Contains(first, error.Message);
        Assert.Contains("not a readable shard", error.Message);
        // The feeder names it too, before training on a row of it: the size up front, the checksum as it first reads it.
        var feederError = await Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            var feeder = new MimFlow.Training.Feeding.ShardFeeder(shards, new MimFlow.Training.Feeding.FeederOptions { BatchSize = 2, DecodeWorkers = 1 });
            await foreach (var batch in feeder.ReadEpochAsync(0)) { }
        });
        Assert.Contains(first, feederError.Message);
    }

    [Fact]
    public async Task Inspect_refuses_codes_outside_the_manifests_codebook_naming_the_shard()
    {
        var (fixture, shards, _) = await SetAsync();
        using var _ = fixture;
        EditManifest(shards, m => m["codebook_size"] = 2);
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => ShardInspector.InspectAsync(shards, fixture.Combine("pictures")));
        Assert.Contains(".parquet: row", error.Message);
        Assert.Contains("outside the manifest's codebook of 2", error.Message);
    }
}
