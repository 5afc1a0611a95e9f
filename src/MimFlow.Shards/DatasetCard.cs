using System.Globalization;
using System.Text;
using System.Text.Json;
using MimFlow.Core.IO;

namespace MimFlow.Shards;

/// <summary>
/// <c>README.md</c> beside <c>manifest.json</c>: the set's dataset card in the style of Hugging Face dataset cards — YAML
/// front matter (<c>configs</c> → <c>data_files</c>, <c>dataset_info</c> → features and split size) that the Hub and
/// <c>datasets.load_dataset(folder)</c> read, then what produced the set, its counts, its columns and how to read it.
/// Made from the manifest alone and written just before it (atomically), by tokenize and by <c>shards merge</c>; the
/// verifier ignores it (it flags unlisted <c>*.parquet</c> files only).
/// </summary>
public static class DatasetCard
{
    public const string FileName = "README.md";

    /// <summary>The line that marks a card as MimFlow's, so a rewrite never replaces a README someone else wrote.</summary>
    public const string Marker = "<!-- mimflow dataset card: written with manifest.json by `mimflow tokenize` and `mimflow shards merge`, replaced when they run again -->";

    private const long MaxCardBytes = 64L << 20;

    /// <summary>
    /// Refuses, before any work, a folder whose README.md MimFlow did not write: the card would replace it, and a file
    /// the user put there is not MimFlow's to replace.
    /// </summary>
    public static void EnsureWritable(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return;
        string text = RegularFile.ReadAllText(path, MaxCardBytes);
        if (!text.Contains(Marker, StringComparison.Ordinal))
            throw new IOException($"{path}: a README.md that mimflow did not write is in the output folder; the set's dataset card goes there, so move it away first");
    }

    public static void Write(string directory, ShardManifest manifest) => AtomicFile.WriteAllText(Path.Combine(directory, FileName), Text(manifest));

    public static string Text(ShardManifest manifest)
    {
        var description = manifest.Description;
        var configuration = manifest.Configuration;
        var columns = ShardMetadata.Columns(description);
        long bytes = manifest.Shards.Sum(s => s.Bytes);
        int images = manifest.SampleCount - manifest.Quarantined;
        string split = HubSplit(configuration.Split);
        var card = new StringBuilder();

        card.Append("---\n");
        card.Append($"pretty_name: {Quoted(Title(manifest))}\n");
        card.Append("tags:\n- mimflow\n- masked-image-modeling\n- pre-tokenized\n");
        card.Append("configs:\n- config_name: default\n  data_files:\n");
        card.Append($"  - split: {split}\n    path: \"part-*.parquet\"\n");
        card.Append("dataset_info:\n  features:\n");
        foreach (var column in columns) AppendYamlFeature(card, column);
        card.Append($"  splits:\n  - name: {split}\n    num_examples: {manifest.Rows}\n");
        card.Append($"  download_size: {bytes}\n");
        card.Append("---\n");
        card.Append(Marker).Append("\n\n");

        card.Append($"# {Title(manifest)}\n\n");
        card.Append(ShardMetadata.Summary(description)).Append('\n');
        card.Append("Each image's rows are consecutive and images come in listing order; `manifest.json` (written last: its presence means the set is complete) lists every shard with its rows, bytes and SHA-256, and `mimflow shards verify` checks them.\n\n");

        card.Append("## What produced it\n\n| | |\n|---|---|\n");
        if (configuration.Tokenizer is { } tokenizer)
            card.Append($"| tokenizer | `{tokenizer.Architecture}`: weights.safetensors SHA-256 `{tokenizer.WeightsSha256}`, config.json SHA-256 `{tokenizer.ConfigSha256}`; codebook of {manifest.CodebookSize:N0} |\n");
        if (configuration.Teacher is { } teacher)
            card.Append($"| teacher | `{teacher.Architecture}`: weights.safetensors SHA-256 `{teacher.WeightsSha256}`, config.json SHA-256 `{teacher.ConfigSha256}`; " +
                        $"last {configuration.TeacherLastLayers} layer(s) averaged, {(configuration.TeacherProjection ? "projected" : "not projected")}, stored {Name(configuration.Features)} |\n");
        card.Append($"| recipe | `{configuration.Recipe}`, {configuration.Views} view(s) per image, seed {configuration.Seed} |\n");
        if (configuration.StoreImageMaxSide is int side)
            card.Append($"| stored image | JPEG, longer side at most {side} px, quality {configuration.StoreImageQuality} |\n");
        card.Append($"| source | layout `{configuration.Layout}`, split `{configuration.Split}` (Hub split `{split}`), {configuration.DatasetSamples:N0} samples listed; " +
                    $"this set covers samples {manifest.FirstSample:N0}..{manifest.FirstSample + manifest.SampleCount - 1:N0}" +
                    (configuration.ShardCount > 1 ? $" (part {configuration.ShardIndex} of {configuration.ShardCount})" : "") +
                    (configuration.Limit is int limit ? $" (limited to {limit:N0})" : "") + " |\n");
        card.Append($"| arithmetic | `{configuration.Arithmetic}` (codes can differ at near-ties between arithmetics) |\n");
        card.Append($"| files | zstd Parquet, row groups of {configuration.RowGroupRows} rows, shards cut at the first image boundary past {configuration.TargetShardBytes:N0} bytes |\n\n");

        card.Append("## Counts\n\n| images | rows | quarantined | shards | bytes |\n|---|---|---|---|---|\n");
        card.Append($"| {images:N0} | {manifest.Rows:N0} | {manifest.Quarantined:N0} | {manifest.Shards.Count:N0} | {bytes:N0} |\n\n");
        card.Append("Images are the samples covered less the quarantined ones, which `quarantine.jsonl` lists with the reason.\n\n");

        card.Append("## Columns\n\n| column | type | meaning |\n|---|---|---|\n");
        foreach (var column in columns) card.Append($"| `{column.Name}` | `{column.Type}` | {column.Meaning.Replace("|", "\\|", StringComparison.Ordinal)} |\n");
        card.Append('\n');
        if (manifest.Classes is { } classes)
        {
            card.Append(classes.Column == ShardClasses.LabelColumn
                ? $"Class names ({classes.Names.Count:N0}, `label` i is name i): "
                : $"Class names of `label_map` ({classes.Names.Count:N0}, value v ≥ 1 is name v − 1): ");
            card.Append(string.Join(", ", classes.Names.Select(n => $"`{n.Replace("`", "'", StringComparison.Ordinal)}`"))).Append(".\n\n");
        }
        card.Append("Every shard carries the same features in its `huggingface` Parquet key-value metadata. Schema, determinism, resuming and merging: ");
        card.Append("`docs/shards.md` in the MimFlow repository.\n\n");

        AppendReading(card, manifest, split);
        return card.ToString();
    }

    private static void AppendReading(StringBuilder card, ShardManifest manifest, string split)
    {
        var columns = manifest.Columns;
        string firstCodes = columns.Codes ? ", codes[1:8] AS first_codes" : "";
        card.Append("## Reading it\n\nFrom this folder (`manifest.json`, `quarantine.jsonl` and this card sit beside the shards, so name the shards by pattern). DuckDB:\n\n");
        card.Append("```sql\n");
        card.Append($"SELECT path, view, label{firstCodes} FROM read_parquet('part-*.parquet') LIMIT 5;\n");
        card.Append("```\n\npyarrow:\n\n```python\nimport glob, numpy as np, pyarrow.dataset as ds\n");
        card.Append("table = ds.dataset(sorted(glob.glob(\"part-*.parquet\")), format=\"parquet\").to_table()\n");
        if (columns.Codes)
            card.Append($"codes = np.stack(table.column(\"codes\").to_numpy(zero_copy_only=False))   # [rows, {manifest.CodeLength}] int16\n");
        if (columns.Features is FeatureEncoding encoding && manifest.FeatureShape is [int tokens, int dim])
        {
            card.Append("row = table.slice(0, 1).to_pylist()[0]\n");
            card.Append(encoding == FeatureEncoding.Fp16
                ? $"features = np.frombuffer(row[\"features\"], \"<f2\").reshape({tokens}, {dim})\n"
                : $"features = np.frombuffer(row[\"features\"], \"i1\").reshape({tokens}, {dim}) * np.frombuffer(row[\"feature_scales\"], \"<f2\")[:, None]\n");
        }
        card.Append("```\n\nHugging Face `datasets`:\n\n```python\nfrom datasets import load_dataset, Image\n");
        card.Append($"ds = load_dataset(\"parquet\", data_files=\"part-*.parquet\", split=\"train\")   # or load_dataset(\"path/to/this/folder\", split=\"{split}\")\n");
        if (manifest.Classes is { Column: ShardClasses.LabelColumn })
            card.Append("ds.features[\"label\"].names[:5]   # label is a ClassLabel\n");
        if (columns.Image) card.Append("ds = ds.cast_column(\"image\", Image())   # the stored JPEG bytes, decoded as PIL images\n");
        if (columns.LabelMap) card.Append("ds = ds.cast_column(\"label_map\", Image())   # the PNG label maps\n");
        card.Append("```\n");
    }

    private static string Title(ShardManifest manifest)
    {
        var c = manifest.Configuration;
        var what = new List<string>();
        if (c.Tokenizer is { } t) what.Add($"{t.Architecture} codes");
        if (c.Teacher is { } teacher) what.Add($"{teacher.Architecture} features");
        return $"MimFlow shards: {c.Layout} {c.Split}, {(what.Count > 0 ? string.Join(" + ", what) : "augmentations only")}, {c.Views} view{(c.Views == 1 ? "" : "s")}";
    }

    /// <summary>The Hub's split name for the source's: train stays, val is "validation".</summary>
    private static string HubSplit(string split) => split == "val" ? "validation" : split;

    private static string Name(FeatureEncoding? encoding) => encoding switch { FeatureEncoding.Fp16 => "fp16", FeatureEncoding.Int8 => "int8 with per-token fp16 scales", _ => "none" };

    /// <summary>One entry of <c>dataset_info.features</c> in the card's YAML, as <c>datasets</c> writes it.</summary>
    private static void AppendYamlFeature(StringBuilder card, ShardMetadata.Column column)
    {
        card.Append($"  - name: {column.Name}\n");
        var feature = column.Feature;
        switch ((string?)feature["_type"])
        {
            case "Value":
                card.Append($"    dtype: {(string?)feature["dtype"]}\n");
                break;
            case "Sequence":
                card.Append($"    sequence: {(string?)feature["feature"]!["dtype"]}\n");
                break;
            case "ClassLabel":
                card.Append("    dtype:\n      class_label:\n        names:\n");
                int i = 0;
                foreach (var name in feature["names"]!.AsArray())
                    card.Append($"          '{(i++).ToString(CultureInfo.InvariantCulture)}': {Quoted((string)name!)}\n");
                break;
            default:
                throw new InvalidOperationException($"column {column.Name}: no YAML form for feature {feature.ToJsonString()}");
        }
    }

    /// <summary>A YAML double-quoted scalar: JSON's string escapes are YAML's, so any name is safe in it (relaxed: only
    /// quotes, backslashes and control characters are escaped, text stays readable).</summary>
    private static string Quoted(string text) => JsonSerializer.Serialize(text, ShardMetadata.Readable);
}
