using MimFlow.Core.IO;
using MimFlow.Data.Quarantine;

namespace MimFlow.Shards;

/// <summary>
/// <c>mimflow shards merge</c>: joins the parts of a <c>--shard i/n</c> run (one folder per machine) into one set.
/// The parts must be complete (each has its manifest), made with the same configuration but for the part index, and
/// cover 0..n−1 exactly once; their shard files are copied over (names already differ by part), quarantine logs are
/// concatenated in part order, and the joined manifest — written last — describes the whole dataset as one run would
/// (<c>shard_index</c> 0 of 1).
/// </summary>
public static class ShardMerger
{
    public static ShardManifest Merge(IReadOnlyList<string> parts, string output)
    {
        if (parts.Count == 0) throw new ArgumentException("nothing to merge: give the part folders");
        var manifests = parts.Select(p => (Folder: p, Manifest: ShardManifest.Read(p))).OrderBy(p => p.Manifest.Configuration.ShardIndex).ToList();
        var reference = manifests[0].Manifest.Configuration with { ShardIndex = 0 };
        int count = reference.ShardCount;
        foreach (var (folder, manifest) in manifests)
        {
            if (manifest.Configuration with { ShardIndex = 0 } != reference)
                throw new InvalidDataException($"{Path.Combine(folder, ShardManifest.FileName)}: made with another configuration than {Path.Combine(manifests[0].Folder, ShardManifest.FileName)}");
            if (manifest.Columns != manifests[0].Manifest.Columns) throw new InvalidDataException($"{folder}: its columns differ from the other parts'");
        }
        var indices = manifests.Select(m => m.Manifest.Configuration.ShardIndex).ToList();
        if (!indices.SequenceEqual(Enumerable.Range(0, count)))
            throw new InvalidDataException($"the parts are {string.Join(", ", indices.Select(i => $"{i}/{count}"))}: a merge needs each of 0/{count} … {count - 1}/{count} exactly once");

        Directory.CreateDirectory(output);
        using var writer = OutputLock.Acquire(output, "shards merge");
        if (File.Exists(Path.Combine(output, ShardManifest.FileName))) throw new IOException($"{output}: already holds a shard set (manifest.json)");
        var shards = new List<ShardEntry>();
        var quarantine = new List<string>();
        foreach (var (folder, manifest) in manifests)
        {
            foreach (var shard in manifest.Shards)
            {
                string target = Path.Combine(output, shard.Name);
                AtomicFile.Write(target, temporary => File.Copy(Path.Combine(folder, shard.Name), temporary, overwrite: true));
                if (new FileInfo(target).Length != shard.Bytes) throw new IOException($"{target}: copied {new FileInfo(target).Length} bytes of {shard.Bytes}");
                shards.Add(shard);
            }
            string log = Path.Combine(folder, QuarantineLog.FileName);
            if (File.Exists(log)) quarantine.AddRange(File.ReadLines(log).Where(l => l.Length > 0));
        }
        AtomicFile.WriteAllText(Path.Combine(output, QuarantineLog.FileName), string.Concat(quarantine.Select(l => l + "\n")));
        var first = manifests[0].Manifest;
        var merged = first with
        {
            Configuration = reference with { ShardCount = 1 },
            FirstSample = first.FirstSample,
            SampleCount = manifests.Sum(m => m.Manifest.SampleCount),
            Rows = manifests.Sum(m => m.Manifest.Rows),
            Quarantined = manifests.Sum(m => m.Manifest.Quarantined),
            Shards = shards,
        };
        merged.Write(output);
        return merged;
    }
}
