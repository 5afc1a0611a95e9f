using System.Formats.Tar;
using Encoding = System.Text.Encoding;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Packing;
using MimFlow.Data.Quarantine;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using ParquetSharp;
using ParquetSharp.Schema;

namespace MimFlow.Tests.Data;

/// <summary>WebDataset tars and Hugging Face Parquet: listing, reading, packing, quarantine, against the folder route.</summary>
public sealed class ArchiveLayoutTests
{
    private static readonly LoaderOptions ScanOptions = new() { DecodeWorkers = 2, ReadConcurrency = 2, BatchSize = 4 };

    /// <summary>A generated ImageNet-layout set (train and val, 3 classes) with one broken JPEG, packed to wds and hf-parquet in small shards.</summary>
    private static async Task<(string Folder, string Wds, string Hf)> PackedImageNet(TemporaryDirectory dir)
    {
        string folder = dir.Combine("folder");
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = folder, Images = 15, Classes = 3, MinSide = 40, MaxSide = 72, ValidationFraction = 0.2,
        });
        string brokenClass = Directory.EnumerateDirectories(Path.Combine(folder, "train")).Order(StringComparer.Ordinal).Last();
        File.WriteAllBytes(Path.Combine(brokenClass, "zz_broken.JPEG"), [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]);
        string wds = dir.Combine("wds"), hf = dir.Combine("hf");
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Format = PackFormat.Wds, OutputDirectory = wds, ShardBytes = 8_000 });
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Format = PackFormat.HfParquet, OutputDirectory = hf, ShardBytes = 8_000, RowGroupRows = 3 });
        return (folder, wds, hf);
    }

    [Fact]
    public void Brace_patterns_expand_zero_padded_ranges_lists_and_nested_groups()
    {
        Assert.Equal(["s-0008.tar", "s-0009.tar", "s-0010.tar"], BraceExpansion.Expand("s-{0008..0010}.tar"));
        Assert.Equal(["9", "10", "11"], BraceExpansion.Expand("{9..11}"));
        Assert.Equal(["010", "009", "008"], BraceExpansion.Expand("{010..8}"));
        Assert.Equal(["a-1", "a-2", "b-1", "b-2"], BraceExpansion.Expand("{a,b}-{1..2}"));
        Assert.Equal(["x", "y1", "y2", "z"], BraceExpansion.Expand("{x,y{1,2},z}"));
        Assert.Equal(["/d/{single}.tar"], BraceExpansion.Expand("/d/{single}.tar"));
        Assert.Equal(["plain.tar"], BraceExpansion.Expand("plain.tar"));
        Assert.Throws<ArgumentException>(() => BraceExpansion.Expand("s-{0..3.tar"));
        Assert.Throws<ArgumentException>(() => BraceExpansion.Expand("{0..99999999}"));
    }

    [Fact]
    public async Task Packed_wds_and_hf_parquet_list_the_folder_samples_in_order_and_scan_accounts_for_every_one()
    {
        using var dir = new TemporaryDirectory();
        var (folder, wds, hf) = await PackedImageNet(dir);
        Assert.True(Directory.GetFiles(Path.Combine(wds, "train"), "*.tar").Length >= 3, "an 8 kB target must cut several tars");
        Assert.True(Directory.GetFiles(Path.Combine(hf, "data"), "train-*-of-*.parquet").Length >= 2, "an 8 kB target must cut several Parquet files");
        Assert.True(File.Exists(Path.Combine(hf, "data", "validation-00000-of-00001.parquet")));

        foreach (var split in new[] { DatasetSplit.Train, DatasetSplit.Validation })
        {
            var reference = DatasetSource.Open(folder, DatasetLayout.ImageNet, split);
            var forms = new[] { DatasetSource.Open(wds, DatasetLayout.Wds, split), DatasetSource.Open(hf, DatasetLayout.HfParquet, split) };
            foreach (var index in forms)
            {
                Assert.Equal(reference.Count, index.Count);
                Assert.Equal(reference.Classes, index.Classes);
                Assert.False(index.HasAnnotations);
                for (int i = 0; i < reference.Count; i++)
                {
                    Assert.Equal(reference[i].Label, index[i].Label);
                    Assert.Equal(await reference.ReadImageAsync(reference[i]), await index.ReadImageAsync(index[i]));
                }
            }
            // wds keys are the path below the split folder without extension; hf-parquet rows are file/row.
            string first = reference[0].RelativePath;
            Assert.EndsWith("/" + first[(first.IndexOf('/') + 1)..first.LastIndexOf('.')], forms[0][0].RelativePath);
            Assert.Matches(@"^(train|validation)-00000-of-\d{5}\.parquet/0$", forms[1][0].RelativePath);
        }

        var reports = new List<(ScanReport Report, IReadOnlyList<QuarantineEntry> Quarantine)>();
        foreach (var (root, layout) in new[] { (folder, DatasetLayout.ImageNet), (wds, DatasetLayout.Wds), (hf, DatasetLayout.HfParquet) })
        {
            string output = dir.Combine("scan-" + DatasetLayouts.Name(layout));
            var report = await DatasetScan.RunAsync(DatasetSource.Open(root, layout), output, DatasetSplit.Train, ScanOptions);
            var lines = File.ReadAllLines(Path.Combine(output, QuarantineLog.FileName)).Select(l => System.Text.Json.JsonSerializer.Deserialize<QuarantineEntry>(l,
                new System.Text.Json.JsonSerializerOptions { PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower })!).ToList();
            reports.Add((report, lines));
        }
        Assert.All(reports, r => Assert.Equal((13, 12, 1), (r.Report.Listed, r.Report.Ok, r.Report.Quarantined)));
        Assert.All(reports, r => Assert.Equal(reports[0].Quarantine.Single().SampleIndex, r.Quarantine.Single().SampleIndex));
        var wdsEntry = reports[1].Quarantine.Single();
        Assert.EndsWith("/zz_broken", wdsEntry.Path);
        Assert.Contains("imagenet-train-", wdsEntry.Reason);
        Assert.Contains("key ", wdsEntry.Reason);
        var hfEntry = reports[2].Quarantine.Single();
        Assert.Contains("train-0000", hfEntry.Reason);
        Assert.Contains("row ", hfEntry.Reason);
    }

    [Fact]
    public async Task Samples_are_found_by_relative_path_and_by_sample_id()
    {
        using var dir = new TemporaryDirectory();
        var (_, wds, hf) = await PackedImageNet(dir);
        foreach (var index in new[] { DatasetSource.Open(wds, DatasetLayout.Wds), DatasetSource.Open(hf, DatasetLayout.HfParquet) })
        {
            foreach (var sample in index.All())
            {
                Assert.True(index.TryFind(sample.RelativePath, out var byPath));
                Assert.Equal(sample, byPath);
                Assert.True(index.TryFindById(SampleIndex.SampleId(sample.RelativePath), out var byId));
                Assert.Equal(sample, byId);
            }
            Assert.False(index.TryFind("nope.tar/missing", out _));
            Assert.False(index.TryFindById("0123456789abcdef", out _));
            Assert.False(index.TryFindById("not hex", out _));
        }
        Assert.Equal(MimFlow.Precompute.Tokenize.TokenizeJob.SampleId("a/b.JPEG"), SampleIndex.SampleId("a/b.JPEG"));
    }

    [Fact]
    public async Task Hf_parquet_files_read_back_by_arrow_with_struct_columns_and_class_label_metadata()
    {
        using var dir = new TemporaryDirectory();
        var (folder, _, hf) = await PackedImageNet(dir);
        var reference = DatasetSource.Open(folder, DatasetLayout.ImageNet);
        int row = 0;
        foreach (string file in Directory.GetFiles(Path.Combine(hf, "data"), "train-*.parquet").Order(StringComparer.Ordinal))
        {
            using var reader = new ParquetFileReader(file);
            var schema = reader.FileMetaData.Schema;
            Assert.Equal(["image.bytes", "image.path", "label"], Enumerable.Range(0, schema.NumColumns).Select(i => schema.Column(i).Path.ToDotString()));
            using (var image = (GroupNode)schema.GroupNode.Fields[0])
                Assert.Equal(Repetition.Optional, image.Repetition);
            string metadata = reader.FileMetaData.KeyValueMetadata["huggingface"];
            using (var json = System.Text.Json.JsonDocument.Parse(metadata))
            {
                var label = json.RootElement.GetProperty("info").GetProperty("features").GetProperty("label");
                Assert.Equal("ClassLabel", label.GetProperty("_type").GetString());
                Assert.Equal(reference.Classes, label.GetProperty("names").EnumerateArray().Select(e => e.GetString()));
                Assert.Equal("Image", json.RootElement.GetProperty("info").GetProperty("features").GetProperty("image").GetProperty("_type").GetString());
            }
            for (int g = 0; g < reader.FileMetaData.NumRowGroups; g++)
            {
                using var group = reader.RowGroup(g);
                int count = checked((int)group.MetaData.NumRows);
                var bytes = group.Column(0).LogicalReader<Nested<byte[]?>?>().ReadAll(count);
                var paths = group.Column(1).LogicalReader<Nested<string?>?>().ReadAll(count);
                var labels = group.Column(2).LogicalReader<long?>().ReadAll(count);
                for (int i = 0; i < count; i++, row++)
                {
                    Assert.Equal(await reference.ReadImageAsync(reference[row]), bytes[i]!.Value.Value);
                    Assert.Equal(reference[row].RelativePath, paths[i]!.Value.Value);
                    Assert.Equal(reference[row].Label, labels[i]);
                }
            }
        }
        Assert.Equal(reference.Count, row);
    }

    [Fact]
    public async Task Hf_parquet_written_by_arrow_in_the_hugging_face_schema_reads_and_bad_rows_are_quarantined()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(48, 40);
        string file = dir.Combine("data", "train-00000-of-00001.parquet");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var metadata = new Dictionary<string, string>
        {
            ["huggingface"] = """{"info": {"features": {"image": {"decode": true, "id": null, "_type": "Image"}, "label": {"names": ["cat", "dog", "eel"], "id": null, "_type": "ClassLabel"}}}}""",
        };
        using (var bytesNode = new PrimitiveNode("bytes", Repetition.Optional, LogicalType.None(), PhysicalType.ByteArray))
        using (var pathNode = new PrimitiveNode("path", Repetition.Optional, LogicalType.String(), PhysicalType.ByteArray))
        using (var image = new GroupNode("image", Repetition.Optional, [bytesNode, pathNode]))
        using (var label = new PrimitiveNode("label", Repetition.Optional, LogicalType.None(), PhysicalType.Int64))
        using (var root = new GroupNode("schema", Repetition.Required, [image, label]))
        using (var properties = new WriterPropertiesBuilder().Compression(Compression.Snappy).Build())
        using (var writer = new ParquetFileWriter(file, root, properties, metadata))
        {
            // Two row groups: good, null struct, good | garbage bytes, null bytes in a present struct.
            var groups = new (Nested<byte[]?>? Image, string? Path, long? Label)[][]
            {
                [(new(jpeg), "a.jpg", 0), (null, null, 1), (new(jpeg), "c.jpg", 2)],
                [(new("garbage, not an image"u8.ToArray()), "d.jpg", 1), (new(null), "e.jpg", 2)],
            };
            foreach (var rows in groups)
            {
                using var group = writer.AppendRowGroup();
                using (var column = group.NextColumn().LogicalWriter<Nested<byte[]?>?>()) column.WriteBatch(rows.Select(r => r.Image).ToArray());
                using (var column = group.NextColumn().LogicalWriter<Nested<string?>?>())
                    column.WriteBatch(rows.Select(r => r.Image is null ? (Nested<string?>?)null : new Nested<string?>(r.Path)).ToArray());
                using (var column = group.NextColumn().LogicalWriter<long?>()) column.WriteBatch(rows.Select(r => r.Label).ToArray());
            }
            writer.Close();
        }

        var index = DatasetSource.Open(dir.Path, DatasetLayout.HfParquet);
        Assert.Equal(["cat", "dog", "eel"], index.Classes);
        Assert.Equal([0, 1, 2, 1, 2], index.All().Select(s => s.Label));
        Assert.Equal(jpeg, await index.ReadImageAsync(index[2]));
        var report = await DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions);
        Assert.Equal((5, 2, 3), (report.Listed, report.Ok, report.Quarantined));
        var reasons = File.ReadAllLines(dir.Combine("scan", QuarantineLog.FileName));
        Assert.Contains(reasons, r => r.Contains("the image is null") && r.Contains("row 1 (row group 0)") && r.Contains("train-00000-of-00001.parquet"));
        Assert.Contains(reasons, r => r.Contains("row 4 (row group 1)") && r.Contains("null"));
        Assert.Contains(reasons, r => r.Contains("row 3 (row group 1)") && r.Contains("\"stage\":\"decode\""));
    }

    [Fact]
    public async Task Reading_hf_parquet_in_order_decodes_each_row_group_once_and_a_tiny_cache_still_reads()
    {
        using var dir = new TemporaryDirectory();
        var (_, _, hf) = await PackedImageNet(dir);
        var index = DatasetSource.Open(hf, DatasetLayout.HfParquet);
        var store = Assert.IsType<ParquetStore>(index.Store);
        int groups = Directory.GetFiles(Path.Combine(hf, "data"), "train-*.parquet").Sum(f =>
        {
            using var reader = new ParquetFileReader(f);
            return reader.FileMetaData.NumRowGroups;
        });
        await foreach (var batch in new DataflowLoader(index, new PretrainRecipe(Size: 32, SecondViewSize: null), ScanOptions with { Format = PixelFormat.UInt8, Shuffle = false }).ReadEpochAsync())
            batch.Dispose();
        Assert.Equal(groups, store.RowGroupLoads);

        var tiny = DatasetSource.Open(hf, DatasetLayout.HfParquet, new DatasetOpenOptions { RowGroupCacheBytes = 1 });
        foreach (var sample in tiny.All().Reverse())
            Assert.NotEmpty(await tiny.ReadImageAsync(sample));
    }

    /// <summary>A tar written by .NET's own writer: entries as given, returning each sample's end offset.</summary>
    private static List<long> WriteTar(string path, TarEntryFormat format, IEnumerable<(string Name, byte[] Bytes)> entries, int? samplesEvery = null)
    {
        var ends = new List<long>();
        using var stream = File.Create(path);
        using var writer = new TarWriter(stream, format, leaveOpen: true);
        int n = 0;
        foreach (var (name, bytes) in entries)
        {
            TarEntry entry = format switch
            {
                TarEntryFormat.Pax => new PaxTarEntry(TarEntryType.RegularFile, name),
                TarEntryFormat.Gnu => new GnuTarEntry(TarEntryType.RegularFile, name),
                _ => new UstarTarEntry(TarEntryType.RegularFile, name),
            };
            entry.DataStream = new MemoryStream(bytes);
            writer.WriteEntry(entry);
            if (samplesEvery is int every && ++n % every == 0) ends.Add(stream.Position);
        }
        return ends;
    }

    [Fact]
    public async Task Tar_listing_reads_gnu_long_names_pax_headers_and_ustar_prefixes_written_by_system_formats_tar()
    {
        using var dir = new TemporaryDirectory();
        byte[] a = TestImages.Jpeg(40, 30), b = TestImages.Jpeg(50, 30), c = TestImages.Jpeg(60, 30);
        string longDir = string.Join('/', Enumerable.Repeat("deep-folder-name", 9));
        WriteTar(dir.Combine("gnu.tar"), TarEntryFormat.Gnu, [($"{longDir}/sample-one.jpg", a), ($"{longDir}/sample-one.cls", "2"u8.ToArray())]);
        WriteTar(dir.Combine("pax.tar"), TarEntryFormat.Pax, [($"{longDir}/été-ünïcode.webp", b), ($"{longDir}/été-ünïcode.json", """{"label": 1, "caption": "x"}"""u8.ToArray())]);
        string prefixed = string.Join('/', Enumerable.Repeat("folder", 16)) + "/s.JPG";
        WriteTar(dir.Combine("ustar.tar"), TarEntryFormat.Ustar, [(prefixed, c)]);
        File.WriteAllText(dir.Combine("classes.txt"), "zero\none\ntwo\n");

        var index = DatasetSource.Open(dir.Path, DatasetLayout.Wds);
        Assert.Equal(["zero", "one", "two"], index.Classes);
        Assert.Equal([$"gnu.tar/{longDir}/sample-one", $"pax.tar/{longDir}/été-ünïcode", $"ustar.tar/{prefixed[..^4]}"], index.All().Select(s => s.RelativePath));
        Assert.Equal([2, 1, -1], index.All().Select(s => s.Label));
        Assert.Equal(a, await index.ReadImageAsync(index[0]));
        Assert.Equal(b, await index.ReadImageAsync(index[1]));
        Assert.Equal(c, await index.ReadImageAsync(index[2]));
    }

    [Fact]
    public void Listing_a_tar_reads_headers_and_labels_only()
    {
        using var dir = new TemporaryDirectory();
        byte[] image = new byte[20_000];
        new Random(1).NextBytes(image);
        const int samples = 200;
        WriteTar(dir.Combine("big.tar"), TarEntryFormat.Ustar,
            Enumerable.Range(0, samples).SelectMany(i => new[] { ($"{i:D5}.jpg", image), ($"{i:D5}.cls", Encoding.ASCII.GetBytes((i % 7).ToString())) }));
        using var file = File.OpenRead(dir.Combine("big.tar"));
        using var counting = new CountingStream(file);
        var listed = WebDatasetSource.ReadSamples(counting, "big.tar").ToList();
        Assert.Equal(samples, listed.Count);
        Assert.All(listed, s => Assert.Null(s.Defect));
        Assert.Equal(Enumerable.Range(0, samples).Select(i => i % 7), listed.Select(s => s.Label));
        // Two headers and a label of at most 2 bytes per sample, plus the end-of-archive block.
        long expected = samples * (2 * 512 + 1) + 512;
        Assert.True(counting.BytesRead <= expected, $"listing read {counting.BytesRead:N0} bytes, more than headers and labels ({expected:N0})");
        Assert.True(file.Length > 20 * counting.BytesRead, $"the tar is {file.Length:N0} bytes; listing must seek over the images");
    }

    [Fact]
    public async Task Broken_members_and_a_truncated_tar_are_quarantined_naming_shard_and_key()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(48, 40);
        WriteTar(dir.Combine("broken.tar"), TarEntryFormat.Ustar,
        [
            ("good.jpg", jpeg), ("good.cls", "1"u8.ToArray()),
            ("text.jpg", "not an image at all"u8.ToArray()), ("text.cls", "0"u8.ToArray()),
            ("lonely.cls", "0"u8.ToArray()), ("lonely.json", "{}"u8.ToArray()),
            ("badlabel.png", TestImages.AlphaPng(30, 20)), ("badlabel.cls", "abc"u8.ToArray()),
        ]);
        var ends = WriteTar(dir.Combine("whole.tar"), TarEntryFormat.Ustar,
            Enumerable.Range(0, 5).SelectMany(i => new[] { ($"s{i}.jpg", jpeg), ($"s{i}.cls", "2"u8.ToArray()) }), samplesEvery: 2);
        byte[] whole = File.ReadAllBytes(dir.Combine("whole.tar"));
        File.Delete(dir.Combine("whole.tar"));
        // Cut inside the image of the fourth sample, and inside the header after the second.
        File.WriteAllBytes(dir.Combine("cut-in-member.tar"), whole[..(int)(ends[2] + 512 + 100)]);
        File.WriteAllBytes(dir.Combine("cut-in-header.tar"), whole[..(int)(ends[1] + 200)]);

        var index = DatasetSource.Open(dir.Path, DatasetLayout.Wds);
        Assert.Equal(
            ["broken.tar/good", "broken.tar/text", "broken.tar/lonely", "broken.tar/badlabel",
             "cut-in-header.tar/s0", "cut-in-header.tar/s1", $"cut-in-header.tar/@{ends[1]}",
             "cut-in-member.tar/s0", "cut-in-member.tar/s1", "cut-in-member.tar/s2", "cut-in-member.tar/s3"],
            index.All().Select(s => s.RelativePath));
        var report = await DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions);
        Assert.Equal((11, 6, 5), (report.Listed, report.Ok, report.Quarantined));
        var entries = File.ReadAllLines(dir.Combine("scan", QuarantineLog.FileName)).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .ToDictionary(e => e.GetProperty("path").GetString()!, e => e.GetProperty("reason").GetString()!);
        Assert.Contains("[broken.tar, key text at byte", entries["broken.tar/text"]);
        Assert.Contains("no image member", entries["broken.tar/lonely"]);
        Assert.Contains("lonely.cls", entries["broken.tar/lonely"]);
        Assert.Contains("bad label in badlabel.cls", entries["broken.tar/badlabel"]);
        Assert.Contains("[broken.tar, key badlabel", entries["broken.tar/badlabel"]);
        Assert.Contains($"cut-in-header.tar is damaged: truncated: a partial header (200 of 512 bytes) at byte {ends[1]:N0}", entries[$"cut-in-header.tar/@{ends[1]}"]);
        Assert.Contains("cut-in-member.tar is damaged: truncated: member s3.jpg", entries["cut-in-member.tar/s3"]);
        Assert.Contains("key s3", entries["cut-in-member.tar/s3"]);
    }

    [Fact]
    public void A_file_that_is_not_a_tar_is_an_error_naming_it()
    {
        using var dir = new TemporaryDirectory();
        File.WriteAllBytes(dir.Combine("fake.tar"), Encoding.UTF8.GetBytes(new string('x', 3000)));
        var error = Assert.Throws<InvalidDataException>(() => DatasetSource.Open(dir.Path, DatasetLayout.Wds));
        Assert.Contains(dir.Combine("fake.tar"), error.Message);
        Assert.Contains("not a tar archive", error.Message);
        File.WriteAllBytes(dir.Combine("fake.tar"), [1, 2, 3]);
        Assert.Contains("not a tar archive", Assert.Throws<InvalidDataException>(() => DatasetSource.Open(dir.Path, DatasetLayout.Wds)).Message);
        string parquet = dir.Combine("hf", "data", "train-00000-of-00001.parquet");
        Directory.CreateDirectory(Path.GetDirectoryName(parquet)!);
        File.WriteAllBytes(parquet, [1, 2, 3, 4]);
        var notParquet = Assert.Throws<InvalidDataException>(() => DatasetSource.Open(dir.Combine("hf"), DatasetLayout.HfParquet));
        Assert.Contains(parquet, notParquet.Message);
    }

    [Fact]
    public void Splits_come_from_subfolders_or_from_split_words_in_file_names_and_patterns_are_taken_as_given()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(32, 32);
        void Tar(string path, params string[] keys)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            WriteTar(path, TarEntryFormat.Ustar, keys.Select(k => ($"{k}.jpg", jpeg)));
        }
        Tar(dir.Combine("named", "in1k-train-0000.tar"), "a");
        Tar(dir.Combine("named", "in1k-train-0001.tar"), "b");
        Tar(dir.Combine("named", "in1k-validation-00.tar"), "c");
        Tar(dir.Combine("named", "in1k-test-00.tar"), "d");
        Tar(dir.Combine("folders", "train", "0.tar"), "e");
        Tar(dir.Combine("folders", "val", "0.tar"), "f");
        Tar(dir.Combine("plain", "00000.tar"), "g");
        Tar(dir.Combine("plain", "00001.tar"), "h");

        string[] Paths(string data, DatasetSplit split) => DatasetSource.Open(data, DatasetLayout.Wds, split).All().Select(s => s.RelativePath).ToArray();
        Assert.Equal(["in1k-train-0000.tar/a", "in1k-train-0001.tar/b"], Paths(dir.Combine("named"), DatasetSplit.Train));
        Assert.Equal(["in1k-validation-00.tar/c"], Paths(dir.Combine("named"), DatasetSplit.Validation));
        Assert.Equal(["0.tar/e"], Paths(dir.Combine("folders"), DatasetSplit.Train));
        Assert.Equal(["0.tar/f"], Paths(dir.Combine("folders"), DatasetSplit.Validation));
        Assert.Equal(["00000.tar/g", "00001.tar/h"], Paths(dir.Combine("plain"), DatasetSplit.Train));
        Assert.Contains("no validation shards", Assert.Throws<FileNotFoundException>(() => Paths(dir.Combine("plain"), DatasetSplit.Validation)).Message);
        Assert.Equal(["in1k-test-00.tar/d", "in1k-train-0001.tar/b"], Paths(dir.Combine("named", "in1k-{test-00,train-0001}.tar"), DatasetSplit.Validation));
        Assert.Equal(["named/in1k-train-0000.tar/a", "plain/00001.tar/h"], Paths(dir.Combine("{named/in1k-train-0000,plain/00001}.tar"), DatasetSplit.Train));
        Assert.Equal(["00001.tar/h"], Paths(dir.Combine("plain", "00001.tar"), DatasetSplit.Train));
        var missing = Assert.Throws<FileNotFoundException>(() => Paths(dir.Combine("plain", "{00000..00003}.tar"), DatasetSplit.Train));
        Assert.Contains("00002.tar", missing.Message);
        Assert.Contains("2 of the 4", missing.Message);
    }

    [Fact]
    public async Task Ade20k_pairs_through_wds_and_hf_parquet_give_the_folder_route_crops_and_label_maps()
    {
        using var dir = new TemporaryDirectory();
        string folder = dir.Combine("ade");
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.Ade20k, OutputDirectory = folder, Images = 6, MinSide = 64, MaxSide = 120, ValidationFraction = 0 });
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Layout = DatasetLayout.Ade20k, Format = PackFormat.Wds, OutputDirectory = dir.Combine("wds") });
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Layout = DatasetLayout.Ade20k, Format = PackFormat.HfParquet, OutputDirectory = dir.Combine("hf"), RowGroupRows = 4 });
        var recipe = new SegmentationRecipe(CropSize: 64, LongScale: 160, ShortScale: 64);
        var options = new LoaderOptions { BatchSize = 3, Seed = 9, Format = PixelFormat.UInt8, DecodeWorkers = 2, ReadConcurrency = 2 };

        async Task<List<(string Path, byte[] Pixels, byte[] Labels)>> Crops(SampleIndex index)
        {
            Assert.True(index.HasAnnotations);
            Assert.Equal(150, index.Classes.Count);
            var rows = new List<(string, byte[], byte[])>();
            await foreach (var batch in new DataflowLoader(index, recipe, options).ReadEpochAsync())
                using (batch)
                    for (int r = 0; r < batch.Count; r++)
                        rows.Add((batch.Samples[r].RelativePath, batch.ViewBytes(0).Slice(r * batch.Views[0].Bytes, batch.Views[0].Bytes).ToArray(), batch.LabelMap(r).ToArray()));
            return rows;
        }

        var reference = await Crops(DatasetSource.Open(folder, DatasetLayout.Ade20k));
        var wds = await Crops(DatasetSource.Open(dir.Combine("wds"), DatasetLayout.Wds));
        var hf = await Crops(DatasetSource.Open(dir.Combine("hf"), DatasetLayout.HfParquet));
        Assert.Equal(6, reference.Count);
        foreach (var packed in new[] { wds, hf })
        {
            Assert.Equal(reference.Count, packed.Count);
            for (int i = 0; i < reference.Count; i++)
            {
                Assert.Equal(reference[i].Pixels, packed[i].Pixels);
                Assert.Equal(reference[i].Labels, packed[i].Labels);
            }
        }
        Assert.EndsWith("/" + Path.GetFileNameWithoutExtension(reference[0].Path), wds[0].Path);
        var tar = Directory.GetFiles(dir.Combine("wds", "train"), "*.tar").Order(StringComparer.Ordinal).First();
        using var reader = new TarReader(File.OpenRead(tar));
        Assert.Equal([".jpg", ".seg.png"], new[] { reader.GetNextEntry()!.Name, reader.GetNextEntry()!.Name }.Select(n => n[n.IndexOf('.')..]));
    }

    [Fact]
    public async Task Pack_refuses_to_overwrite_an_earlier_pack_unless_forced_and_then_replaces_only_its_own_shards()
    {
        using var dir = new TemporaryDirectory();
        string folder = dir.Combine("folder");
        await TestImages.TrainingSet(folder, 8, classes: 2, minSide: 40, maxSide: 60);
        string output = dir.Combine("wds");
        var request = new PackRequest { From = folder, Format = PackFormat.Wds, OutputDirectory = output, ShardBytes = 1 };
        var first = await DatasetPacker.PackAsync(request);
        Assert.Equal(8, Assert.Single(first.Splits).Files.Count);
        File.WriteAllText(Path.Combine(output, "train", "notes.txt"), "mine");
        var refused = await Assert.ThrowsAsync<PackOutputExistsException>(() => DatasetPacker.PackAsync(request with { ShardBytes = 1L << 30 }));
        Assert.Contains("--force", refused.Message);
        Assert.Equal(8, Directory.GetFiles(Path.Combine(output, "train"), "*.tar").Length);

        var forced = await DatasetPacker.PackAsync(request with { ShardBytes = 1L << 30, Force = true });
        Assert.Single(Assert.Single(forced.Splits).Files);
        Assert.Equal(7, forced.Splits[0].Replaced.Count);
        Assert.Single(Directory.GetFiles(Path.Combine(output, "train"), "*.tar"));
        Assert.True(File.Exists(Path.Combine(output, "train", "notes.txt")), "files the pack did not write stay");
        Assert.Empty(Directory.GetFiles(output, "*.partial*", SearchOption.AllDirectories));
        Assert.Equal(8, DatasetSource.Open(output, DatasetLayout.Wds).Count);
    }

    private sealed class CountingStream(Stream inner) : Stream
    {
        public long BytesRead { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => true;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() { }

        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));

        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        private int Count(int read)
        {
            BytesRead += read;
            return read;
        }
    }
}
