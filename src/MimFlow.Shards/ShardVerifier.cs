using MimFlow.Core.IO;
using MimFlow.Data.Quarantine;

namespace MimFlow.Shards;

/// <summary>
/// <c>mimflow shards verify</c>: everything a reader relies on, checked against the manifest — each shard present with
/// its size and SHA-256, its Parquet schema the set's, its row count, every code list of the grid's length and inside
/// the codebook, every feature blob of the manifest's shape, views in range; shard ranges contiguous over the part;
/// no shard file the manifest does not list; the quarantine count. Returns every problem found, each naming the file.
/// </summary>
public static class ShardVerifier
{
    public sealed record Report(ShardManifest? Manifest, IReadOnlyList<string> Problems, long RowsChecked)
    {
        public bool Ok => Problems.Count == 0;
    }

    public static async Task<Report> VerifyAsync(string directory, CancellationToken cancellationToken = default)
    {
        ShardManifest manifest;
        try
        {
            manifest = ShardManifest.Read(directory);
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            return new Report(null, [e.Message], 0);
        }
        return await VerifyAsync(directory, manifest, cancellationToken);
    }

    /// <summary>The folder's shards against a manifest not yet written (a merge checks before it commits).</summary>
    public static async Task<Report> VerifyAsync(string directory, ShardManifest manifest, CancellationToken cancellationToken = default)
    {
        var problems = new List<string>();
        long rowsChecked = 0;
        int expectedFirst = manifest.FirstSample;
        foreach (var shard in manifest.Shards)
        {
            string path = Path.Combine(directory, shard.Name);
            if (shard.FirstSample != expectedFirst)
                problems.Add($"{path}: covers samples from {shard.FirstSample}, the previous shard ends at {expectedFirst}");
            expectedFirst = shard.FirstSample + shard.Samples;
            var file = new FileInfo(path);
            if (!file.Exists)
            {
                problems.Add($"{path}: missing (listed in the manifest with {shard.Rows} rows)");
                continue;
            }
            if (file.Length != shard.Bytes)
            {
                problems.Add($"{path}: {file.Length} bytes, the manifest says {shard.Bytes} (truncated or replaced)");
                continue;
            }
            string sha = ModelIdentity.Sha256Of(path);
            if (sha != shard.Sha256)
            {
                problems.Add($"{path}: SHA-256 {sha} differs from the manifest's {shard.Sha256} (corrupted)");
                continue;
            }
            rowsChecked += await CheckRowsAsync(path, shard, manifest, problems, cancellationToken);
        }
        if (expectedFirst != manifest.FirstSample + manifest.SampleCount && manifest.Shards.Count > 0)
            problems.Add($"{Path.Combine(directory, ShardManifest.FileName)}: the shards cover samples up to {expectedFirst}, the part ends at {manifest.FirstSample + manifest.SampleCount}");
        if (manifest.Shards.Sum(s => s.Rows) != manifest.Rows)
            problems.Add($"{Path.Combine(directory, ShardManifest.FileName)}: the shards hold {manifest.Shards.Sum(s => s.Rows)} rows, the manifest says {manifest.Rows}");
        var listed = manifest.Shards.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var extra in Directory.EnumerateFiles(directory, "*.parquet").Where(f => !listed.Contains(Path.GetFileName(f))).Order(StringComparer.Ordinal))
            problems.Add($"{extra}: a shard file the manifest does not list");
        string quarantinePath = Path.Combine(directory, QuarantineLog.FileName);
        int quarantined = File.Exists(quarantinePath) ? File.ReadLines(quarantinePath).Count(l => l.Length > 0) : 0;
        if (quarantined != manifest.Quarantined)
            problems.Add($"{quarantinePath}: {quarantined} entries, the manifest counts {manifest.Quarantined}");
        return new Report(manifest, problems, rowsChecked);
    }

    private static async Task<long> CheckRowsAsync(string path, ShardEntry shard, ShardManifest manifest, List<string> problems, CancellationToken cancellationToken)
    {
        try
        {
            Parquet.Schema.ParquetSchema schema;
            await using (var stream = RegularFile.OpenRead(path))
            await using (var reader = await ShardReader.OpenAsync(stream, path, cancellationToken))
                schema = reader.Schema;
            var columns = ShardReader.ColumnsOf(schema);
            if (columns != manifest.Columns)
            {
                problems.Add($"{path}: columns [{string.Join(", ", schema.Fields.Select(f => f.Name))}] do not match the manifest's set");
                return 0;
            }
            long rows = 0;
            int tokens = manifest.FeatureShape?[0] ?? 0, dim = manifest.FeatureShape?[1] ?? 0;
            long featureBytes = (long)tokens * dim * (manifest.Columns.Features == FeatureEncoding.Fp16 ? 2 : 1);
            await foreach (var row in ShardReader.ReadAsync(path, cancellationToken))
            {
                string where = $"{path}: row {rows} ({row.Path}, view {row.View})";
                rows++;
                if (row.View < 0 || row.View >= manifest.Configuration.Views) problems.Add($"{where}: view outside 0..{manifest.Configuration.Views - 1}");
                if (row.Codes is { } codes)
                {
                    if (codes.Length != manifest.CodeLength) problems.Add($"{where}: {codes.Length} codes, the grid has {manifest.CodeLength}");
                    else if (codes.Any(c => c < 0 || c >= manifest.CodebookSize)) problems.Add($"{where}: a code outside 0..{manifest.CodebookSize - 1}");
                }
                if (row.Features is { } features && features.Length != featureBytes)
                    problems.Add($"{where}: {features.Length} feature bytes, [{tokens}, {dim}] needs {featureBytes}");
                if (row.FeatureScales is { } scales && scales.Length != tokens * 2)
                    problems.Add($"{where}: {scales.Length} scale bytes, {tokens} tokens need {tokens * 2}");
                if (problems.Count > 100) break;
            }
            if (rows != shard.Rows) problems.Add($"{path}: {rows} rows, the manifest says {shard.Rows}");
            return rows;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Whatever a damaged file makes the reader throw is one more problem of that file: verify reports, never crashes.
            problems.Add($"{path}: unreadable as a shard ({e.Message})");
            return 0;
        }
    }
}
