using System.Text.Json;
using Apache.Arrow;
using Apache.Arrow.Types;
using MimFlow.Precompute.Tokenize;
using MimFlow.Shards;
using MimFlow.Tests.Precompute;
using Parquet;
using Parquet.Schema;

namespace MimFlow.Tests.Shards;

/// <summary>Shards describe themselves: Hugging Face features in every file's metadata, a dataset card beside the manifest.</summary>
public sealed class ShardSelfDescriptionTests
{
    /// <summary>
    /// Apache Arrow's C++ reader (ParquetSharp.Arrow, the conversion pyarrow runs) sees the <c>huggingface</c> metadata,
    /// and every declared feature's Arrow type is the column's: <c>datasets</c> keeps a declared feature only where its
    /// Arrow field equals the file's, so the ClassLabel must sit on a nullable int64 column to count.
    /// </summary>
    [Fact]
    public async Task Every_shard_declares_features_whose_types_are_its_columns_with_the_class_names_as_a_ClassLabel()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        string output = fixture.Combine("shards");
        var manifest = (await TokenizeJob.RunAsync(fixture.Request(output))).Manifest;
        Assert.Equal(fixture.Index.Classes, manifest.Classes!.Names);
        Assert.Equal("label", manifest.Classes.Column);

        foreach (var shard in manifest.Shards)
        {
            using var reader = new ParquetSharp.Arrow.FileReader(Path.Combine(output, shard.Name));
            var schema = reader.Schema;
            using var json = JsonDocument.Parse(schema.Metadata[ShardMetadata.HuggingFaceKey]);
            var info = json.RootElement.GetProperty("info");
            var features = info.GetProperty("features");
            Assert.Equal(schema.FieldsList.Select(f => f.Name), features.EnumerateObject().Select(p => p.Name));

            foreach (var field in schema.FieldsList)
            {
                var feature = features.GetProperty(field.Name);
                switch (feature.GetProperty("_type").GetString())
                {
                    case "Value":
                        Assert.Equal(ArrowTypeOf(feature.GetProperty("dtype").GetString()!), field.DataType.TypeId);
                        break;
                    case "Sequence":
                        Assert.Equal(-1, feature.GetProperty("length").GetInt32());
                        var list = Assert.IsType<ListType>(field.DataType);
                        Assert.Equal(ArrowTypeOf(feature.GetProperty("feature").GetProperty("dtype").GetString()!), list.ValueDataType.TypeId);
                        break;
                    case "ClassLabel":
                        Assert.Equal("label", field.Name);
                        Assert.Equal(ArrowTypeId.Int64, field.DataType.TypeId);
                        Assert.True(field.IsNullable, "datasets compares nullability too: ClassLabel's field is nullable");
                        Assert.Equal(fixture.Index.Classes, feature.GetProperty("names").EnumerateArray().Select(n => n.GetString()));
                        break;
                    default:
                        Assert.Fail($"{field.Name}: unexpected feature {feature}");
                        break;
                }
            }
            Assert.Equal("ClassLabel", features.GetProperty("label").GetProperty("_type").GetString());
            Assert.Equal("int16", features.GetProperty("codes").GetProperty("feature").GetProperty("dtype").GetString());
            Assert.Equal("binary", features.GetProperty("image").GetProperty("dtype").GetString());
            string description = info.GetProperty("description").GetString()!;
            Assert.Contains("features (binary): teacher patch features [16, 24], int8", description);
            Assert.Contains("feature_scales (binary): 16 little-endian float16 scales", description);
            Assert.Contains("codes (list<int16>): 16 tokenizer codes per row (4×4 patches)", description);
            Assert.Contains("longer side at most 48 px", description);
        }
    }

    [Fact]
    public async Task Tokenize_and_merge_write_a_dataset_card_with_the_sets_figures_that_verify_leaves_alone()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        string whole = fixture.Combine("whole");
        var manifest = (await TokenizeJob.RunAsync(fixture.Request(whole))).Manifest;
        AssertCard(whole, manifest, images: 10, rows: 20, quarantined: 1);
        string card = File.ReadAllText(Path.Combine(whole, DatasetCard.FileName));
        Assert.Contains($"weights.safetensors SHA-256 `{manifest.Configuration.Tokenizer!.WeightsSha256}`", card);
        Assert.Contains($"weights.safetensors SHA-256 `{manifest.Configuration.Teacher!.WeightsSha256}`", card);
        Assert.Contains("| recipe | `" + manifest.Configuration.Recipe + "`, 2 view(s) per image, seed 7 |", card);
        Assert.Contains("layout `imagenet`, split `train` (Hub split `train`), 11 samples listed", card);
        Assert.Contains("| arithmetic | `cpu-float32`", card);
        Assert.Contains("stored int8 with per-token fp16 scales", card);

        for (int part = 0; part < 2; part++)
        {
            var partManifest = (await TokenizeJob.RunAsync(fixture.Request(fixture.Combine($"p{part}")) with { ShardIndex = part, ShardCount = 2 })).Manifest;
            Assert.Contains($"(part {part} of 2)", File.ReadAllText(Path.Combine(fixture.Combine($"p{part}"), DatasetCard.FileName)));
            AssertCard(fixture.Combine($"p{part}"), partManifest, partManifest.SampleCount - partManifest.Quarantined, partManifest.Rows, partManifest.Quarantined);
        }
        string merged = fixture.Combine("merged");
        var mergedManifest = await ShardMerger.MergeAsync([fixture.Combine("p0"), fixture.Combine("p1")], merged);
        AssertCard(merged, mergedManifest, images: 10, rows: 20, quarantined: 1);
        Assert.DoesNotContain("(part ", File.ReadAllText(Path.Combine(merged, DatasetCard.FileName)));
        Assert.Equal(manifest.Classes!.Names, mergedManifest.Classes!.Names);
    }

    private static void AssertCard(string directory, ShardManifest manifest, int images, long rows, int quarantined)
    {
        string path = Path.Combine(directory, DatasetCard.FileName);
        Assert.True(File.Exists(path), $"{path}: no dataset card beside the manifest");
        string card = File.ReadAllText(path);
        long bytes = manifest.Shards.Sum(s => s.Bytes);
        Assert.True(card.StartsWith("---\npretty_name: \"MimFlow shards: imagenet train, vqkd-test codes + vit-test features, 2 views\"\n", StringComparison.Ordinal), card[..200]);
        Assert.Contains("configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: \"part-*.parquet\"\n", card);
        Assert.Contains("  - name: label\n    dtype:\n      class_label:\n        names:\n", card);
        for (int i = 0; i < manifest.Classes!.Names.Count; i++) Assert.Contains($"          '{i}': \"{manifest.Classes.Names[i]}\"\n", card);
        Assert.Contains("  - name: codes\n    sequence: int16\n", card);
        Assert.Contains("  - name: image\n    dtype: binary\n", card);
        Assert.Contains($"  splits:\n  - name: train\n    num_examples: {rows}\n  download_size: {bytes}\n---\n{DatasetCard.Marker}\n", card);
        Assert.Contains($"| {images:N0} | {rows:N0} | {quarantined:N0} | {manifest.Shards.Count:N0} | {bytes:N0} |", card);
        Assert.Contains("`docs/shards.md`", card);
        Assert.Contains("read_parquet('part-*.parquet')", card);
        Assert.Contains("load_dataset(\"parquet\", data_files=\"part-*.parquet\", split=\"train\")", card);
        Assert.Contains("ds.cast_column(\"image\", Image())", card);
        var report = ShardVerifier.VerifyAsync(directory).GetAwaiter().GetResult();
        Assert.True(report.Ok, string.Join("\n", report.Problems));
    }

    [Fact]
    public async Task A_README_that_mimflow_did_not_write_stops_tokenize_and_merge_before_any_work_and_stays()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 4);
        string output = fixture.Combine("shards");
        Directory.CreateDirectory(output);
        string mine = Path.Combine(output, DatasetCard.FileName);
        File.WriteAllText(mine, "my notes\n");
        var error = await Assert.ThrowsAsync<IOException>(() => TokenizeJob.RunAsync(fixture.Request(output)));
        Assert.Contains(mine, error.Message);
        Assert.Equal("my notes\n", File.ReadAllText(mine));
        Assert.Empty(Directory.EnumerateFiles(output, "*.parquet"));

        string part = fixture.Combine("part");
        await TokenizeJob.RunAsync(fixture.Request(part));
        string merged = fixture.Combine("merged");
        Directory.CreateDirectory(merged);
        File.WriteAllText(Path.Combine(merged, DatasetCard.FileName), "mine too\n");
        await Assert.ThrowsAsync<IOException>(() => ShardMerger.MergeAsync([part], merged));
        Assert.Equal("mine too\n", File.ReadAllText(Path.Combine(merged, DatasetCard.FileName)));
        Assert.Empty(Directory.EnumerateFiles(merged, "*.parquet"));
    }

    /// <summary>Sets written before the label column became int64 (for ClassLabel) stay readable.</summary>
    [Fact]
    public async Task A_shard_with_the_earlier_int32_label_column_reads_the_same_labels()
    {
        using var directory = new TemporaryDirectory();
        string path = directory.Combine("part-00000-00000.parquet");
        var schema = new ParquetSchema(new DataField<string>("sample_id"), new DataField<string>("path"), new DataField<int?>("label"), new DataField<int>("view"),
            new DataField<string>("augment"), new DataField<int>("source_width"), new DataField<int>("source_height"));
        await using (var stream = File.Create(path))
        await using (var writer = await ParquetWriter.CreateAsync(schema, stream))
        using (var group = writer.CreateRowGroup())
        {
            var fields = schema.DataFields;
            await group.WriteAsync(fields[0], new[] { "a", "b" }, null);
            await group.WriteAsync(fields[1], new[] { "x/1.JPEG", "x/2.JPEG" }, null);
            await group.WriteAllPartsAsync<int>(fields[2], new[] { 3 }, new[] { fields[2].MaxDefinitionLevel, 0 }, null, CancellationToken.None);
            await group.WriteAsync<int>(fields[3], new[] { 0, 0 }.AsMemory(), null, null, CancellationToken.None);
            await group.WriteAsync(fields[4], new[] { "{}", "{}" }, null);
            await group.WriteAsync<int>(fields[5], new[] { 10, 20 }.AsMemory(), null, null, CancellationToken.None);
            await group.WriteAsync<int>(fields[6], new[] { 30, 40 }.AsMemory(), null, null, CancellationToken.None);
            group.CompleteValidate();
        }
        var rows = new List<ShardRow>();
        await foreach (var row in ShardReader.ReadAsync(path)) rows.Add(row);
        Assert.Equal([3, null], rows.Select(r => r.Label));
        Assert.Equal([10, 20], rows.Select(r => r.SourceWidth));
    }

    private static ArrowTypeId ArrowTypeOf(string dtype) => dtype switch
    {
        "string" => ArrowTypeId.String,
        "binary" => ArrowTypeId.Binary,
        "int16" => ArrowTypeId.Int16,
        "int32" => ArrowTypeId.Int32,
        "int64" => ArrowTypeId.Int64,
        _ => throw new ArgumentException($"no Arrow type known for dtype {dtype}"),
    };
}
