using MimFlow.Core.IO;
using MimFlow.Data.Quarantine;

namespace MimFlow.Shards;

/// <summary>
/// <c>mimflow shards merge</c>: joins the parts of a <c>--shard i/n</c> run (one folder per machine) into one set.
/// The parts must be complete (each has its manifest), made with the same configuration but for the part index, and
/// cover 0..n−1 exactly once; their shard files are copied over (names already differ by part) and each copy checked
/// against its part's SHA-256, quarantine logs are concatenated in part order, the whole set is verified, and only
/// then are the dataset card and the joined manifest written: the manifest is the commit point, so a failed merge
/// leaves no manifest (and removes the files it copied, the card included) and can simply be run again. The manifest
/// describes the whole dataset as one run would (<c>shard_index</c> 0 of 1).
/// </summary>
public static class ShardMerger
{
    public static async Task<ShardManifest> MergeAsync(IReadOnlyList<string> parts, string output, CancellationToken cancellationToken = default)
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
            if (!SameClasses(manifest.Classes, manifests[0].Manifest.Classes))
                throw new InvalidDataException($"{Path.Combine(folder, ShardManifest.FileName)}: its class names differ from those of {Path.Combine(manifests[0].Folder, ShardManifest.FileName)}");
        }
        var indices = manifests.Select(m => m.Manifest.Configuration.ShardIndex).ToList();
        if (!indices.SequenceEqual(Enumerable.Range(0, count)))
            throw new InvalidDataException($"the parts are {string.Join(", ", indices.Select(i => $"{i}/{count}"))}: a merge needs each of 0/{count} … {count - 1}/{count} exactly once");
        var names = manifests.SelectMany(m => m.Manifest.Shards.Select(s => s.Name)).GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (names is not null) throw new InvalidDataException($"shard '{names.Key}' appears in more than one part");

        Directory.CreateDirectory(output);
        using var writer = OutputLock.Acquire(output, "shards merge");
        if (File.Exists(Path.Combine(output, ShardManifest.FileName))) throw new IOException($"{output}: already holds a shard set (manifest.json)");
        DatasetCard.EnsureWritable(output);
        var written = new List<string>();
        try
        {
            var shards = new List<ShardEntry>();
            var quarantine = new List<string>();
            foreach (var (folder, manifest) in manifests)
            {
                foreach (var shard in manifest.Shards)
                {
                    string source = Path.Combine(folder, shard.Name), target = Path.Combine(output, shard.Name);
                    written.Add(target);
                    AtomicFile.Write(target, temporary =>
                    {
                        File.Copy(source, temporary, overwrite: true);
                        string sha = ModelIdentity.Sha256Of(temporary);
                        if (sha != shard.Sha256)
                            throw new InvalidDataException($"{source}: SHA-256 {sha} differs from its part's manifest ({shard.Sha256}): the part is corrupted; nothing was merged");
                    });
                    shards.Add(shard);
                }
                string log = Path.Combine(folder, QuarantineLog.FileName);
                if (File.Exists(log)) quarantine.AddRange(File.ReadLines(log).Where(l => l.Length > 0));
            }
            string mergedLog = Path.Combine(output, QuarantineLog.FileName);
            written.Add(mergedLog);
            AtomicFile.WriteAllText(mergedLog, string.Concat(quarantine.Select(l => l + "\n")));
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
            var report = await ShardVerifier.VerifyAsync(output, merged, cancellationToken);
            if (!report.Ok) throw new InvalidDataException($"the merged set does not verify, nothing was committed: {report.Problems[0]}");
            written.Add(Path.Combine(output, DatasetCard.FileName));
            DatasetCard.Write(output, merged);
            merged.Write(output);
            return merged;
        }
        catch
        {
            foreach (string path in written) File.Delete(path);
            throw;
        }
    }

    private static bool SameClasses(ShardClasses? a, ShardClasses? b) =>
        a is null || b is null ? a is null && b is null : a.Column == b.Column && a.Names.SequenceEqual(b.Names, StringComparer.Ordinal);
}
