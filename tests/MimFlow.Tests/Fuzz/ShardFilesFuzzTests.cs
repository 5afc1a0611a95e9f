using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MimFlow.Data.Masking;
using MimFlow.Precompute.Tokenize;
using MimFlow.Shards;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Feeding;
using Xunit.Abstractions;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged shard sets and tokenize journals. Shard files (truncated, bytes flipped) and manifest.json (JSON edits,
/// byte damage) are read by the feeder, <c>shards verify</c> and <c>shards inspect</c>: each is refused naming the
/// file, or read; damage the manifest does not record is always refused by the feeder and reported by verify (a
/// shard is never trained on unchecked). Each shard damage is also tried under a manifest that records it (its size
/// and SHA-256 updated), so the Parquet reading itself meets the damage. progress.json (JSON edits, byte damage) is
/// opened for a resume: refused naming it, or a journal whose shards are on disk as listed — and a resume from
/// such a journal ends with exactly the shards of an uninterrupted run.
/// </summary>
public sealed class ShardFilesFuzzTests(ITestOutputHelper output)
{
    private static readonly Type[] Refusals = [typeof(InvalidDataException), typeof(IOException), typeof(ArgumentException)];

    private static FeederOptions Options => new() { BatchSize = 2, Seed = 3, ShuffleBuffer = 4, DecodeWorkers = 1, Masks = new BlockwiseMaskGenerator(4, 4, 6, MinBlockPatches: 2) };

    private static void Copy(string from, string to)
    {
        if (Directory.Exists(to)) Directory.Delete(to, recursive: true);
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }

    private static List<string> Feed(string set)
    {
        var ids = new List<string>();
        var feeder = new ShardFeeder(set, Options);
        foreach (var batch in feeder.ReadEpochAsync(0).ToBlockingEnumerable()) ids.AddRange(batch.SampleIds);
        return ids;
    }

    [Fact]
    public async Task Damaged_shards_and_manifests_are_read_verified_and_inspected_or_refused_naming_the_file()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        string pristine = fixture.Combine("pristine");
        await TokenizeJob.RunAsync(fixture.Request(pristine) with { RowGroupRows = 2 });
        var manifest = ShardManifest.Read(pristine);
        var clean = Feed(pristine);
        string set = fixture.Combine("case");
        string manifestPath = Path.Combine(set, ShardManifest.FileName);
        string manifestJson = File.ReadAllText(Path.Combine(pristine, ShardManifest.FileName));
        var run = new FuzzRun("shard sets", output);
        string pristineForm = System.Text.Json.JsonSerializer.Serialize(manifest, ShardManifest.Json);
        bool Same(ShardManifest read) => System.Text.Json.JsonSerializer.Serialize(read, ShardManifest.Json) == pristineForm;

        void Verify(string label, bool mustFind, IReadOnlyList<string> names) => run.Case($"{label} (verify)", () =>
        {
            var report = ShardVerifier.VerifyAsync(set).GetAwaiter().GetResult();
            if (mustFind && report.Ok) throw new InvalidOperationException("verify found nothing wrong");
            foreach (string problem in report.Problems)
                if (!problem.Contains(set, StringComparison.Ordinal)) throw new InvalidOperationException($"a problem naming no file: {problem}");
        }, names);

        void Inspect(string label, IReadOnlyList<string> names) => run.Case($"{label} (inspect)", () =>
            ShardInspector.InspectAsync(set, fixture.Combine("pictures"), samples: 1).GetAwaiter().GetResult(), names, Refusals);

        // Shard files: damage the manifest does not know of must be refused; recorded damage meets the Parquet reader.
        string name = manifest.Shards[0].Name, shardPath = Path.Combine(set, name);
        byte[] shard = File.ReadAllBytes(Path.Combine(pristine, name));
        int footer = shard.Length - 8 - BitConverter.ToInt32(shard, shard.Length - 8);
        foreach (var fuzz in Mutations.Of(shard, 101, 40, [4, footer]))
        {
            Copy(pristine, set);
            File.WriteAllBytes(shardPath, fuzz.Bytes);
            run.Case($"shard {fuzz.Label} (feeder)", () =>
            {
                Feed(set);
                throw new InvalidOperationException("the feeder read a shard the manifest does not describe");
            }, [shardPath], Refusals);
            Verify($"shard {fuzz.Label}", mustFind: true, [shardPath]);

            var recorded = JsonNode.Parse(manifestJson)!;
            recorded["shards"]![0]!["bytes"] = fuzz.Bytes.Length;
            recorded["shards"]![0]!["sha256"] = Convert.ToHexStringLower(SHA256.HashData(fuzz.Bytes));
            File.WriteAllText(manifestPath, recorded.ToJsonString());
            run.Case($"recorded shard {fuzz.Label} (feeder)", () => Feed(set), [shardPath], Refusals);
            Verify($"recorded shard {fuzz.Label}", mustFind: false, [shardPath]);
            Inspect($"recorded shard {fuzz.Label}", [shardPath]);
        }

        // manifest.json: JSON-level edits (every value, removed keys, unknown keys) and byte damage.
        var manifests = Mutations.OfJson(manifestJson, 102, 90).Select(f => f with { Label = $"manifest {f.Label}" })
            .Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(manifestJson), 103, 20).Select(f => f with { Label = $"manifest {f.Label}" }));
        foreach (var fuzz in manifests)
        {
            Copy(pristine, set);
            File.WriteAllBytes(manifestPath, fuzz.Bytes);
            // A manifest that still reads as the same set gives exactly the same epoch; one that reads differently may give another.
            run.Case($"{fuzz.Label} (feeder)", () =>
            {
                var ids = Feed(set);
                if (Same(ShardManifest.Read(set)) && !ids.SequenceEqual(clean)) throw new InvalidOperationException("the same set read differently");
            }, [set], Refusals);
            Verify(fuzz.Label, mustFind: false, [set]);
            Inspect(fuzz.Label, [set]);
        }
        run.Finish();
        Assert.Equal(clean, Feed(pristine));
    }

    [Fact]
    public async Task A_damaged_tokenize_journal_is_refused_naming_it_or_resumed_to_exactly_the_uninterrupted_shards()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        var request = fixture.Request(fixture.Combine("clean")) with { TeacherDirectory = null, TargetShardBytes = 6_000 };
        var expected = (await TokenizeJob.RunAsync(request)).Manifest;
        Assert.True(expected.Shards.Count >= 3);

        // An interrupted run: the journal after two shards, as TokenizeJob writes it (a finished set has none left).
        string interrupted = fixture.Combine("interrupted");
        Copy(fixture.Combine("clean"), interrupted);
        File.Delete(Path.Combine(interrupted, ShardManifest.FileName));
        foreach (var late in expected.Shards.Skip(2)) File.Delete(Path.Combine(interrupted, late.Name));
        var quarantine = System.Text.Json.JsonSerializer.Deserialize<List<MimFlow.Data.Quarantine.QuarantineEntry>>(
            "[" + string.Join(",", File.ReadAllLines(Path.Combine(interrupted, "quarantine.jsonl"))) + "]", ShardManifest.Json)!;
        int covered = expected.Shards[1].FirstSample + expected.Shards[1].Samples;
        string journal = new JsonObject
        {
            ["configuration"] = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(expected.Configuration, ShardManifest.Json)),
            ["shards"] = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(expected.Shards.Take(2), ShardManifest.Json)),
            ["quarantine"] = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(quarantine.Where(q => q.SampleIndex < covered), ShardManifest.Json)),
        }.ToJsonString();
        File.WriteAllText(Path.Combine(interrupted, TokenizeJob.ProgressFileName), journal);
        var resumed = (await TokenizeJob.RunAsync(request with { OutputDirectory = interrupted })).Manifest;
        Assert.Equal(expected.Shards, resumed.Shards);

        var run = new FuzzRun("tokenize journal", output);
        string folder = fixture.Combine("case");
        string progress = Path.Combine(folder, TokenizeJob.ProgressFileName);
        int resumes = 0;
        var cases = Mutations.OfJson(journal, 201, 110).Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(journal), 202, 25));
        foreach (var fuzz in cases)
        {
            Copy(interrupted, folder);
            foreach (var late in expected.Shards.Skip(2)) File.Delete(Path.Combine(folder, late.Name));
            File.Delete(Path.Combine(folder, ShardManifest.FileName));
            File.WriteAllBytes(progress, fuzz.Bytes);
            run.Case($"progress.json {fuzz.Label}", () =>
            {
                var opened = TokenizeJournal.Open(folder, expected.Configuration);
                foreach (var listed in opened.Shards)
                    if (new FileInfo(Path.Combine(folder, listed.Name)).Length != listed.Bytes) throw new InvalidOperationException($"{listed.Name} is not on disk as listed");
                // A journal taken: the resume must give exactly the uninterrupted shards (a few cases, each a tokenize run).
                if (resumes++ % 8 != 0) return;
                var manifest = TokenizeJob.RunAsync(request with { OutputDirectory = folder }).GetAwaiter().GetResult().Manifest;
                if (!manifest.Shards.SequenceEqual(expected.Shards)) throw new InvalidOperationException("the resumed set differs from the uninterrupted one");
            }, [progress, folder], [typeof(InvalidDataException), typeof(InvalidOperationException)]);
        }
        run.Finish();
    }
}
