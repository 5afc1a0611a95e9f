using MimFlow.Core.Diagnostics;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Cli;
using ParquetSharp;
using static TorchSharp.torch;

namespace MimFlow.Tests.Precompute;

public sealed class TokenizeTests
{
    private static async Task<List<ShardRow>> RowsOf(string directory)
    {
        var rows = new List<ShardRow>();
        foreach (var shard in ShardManifest.Read(directory).Shards)
            await foreach (var row in ShardReader.ReadAsync(Path.Combine(directory, shard.Name))) rows.Add(row);
        return rows;
    }

    [Fact]
    public async Task The_tokenize_benchmark_warms_both_sides_up_in_whole_passes_times_no_more_images_than_the_data_has_and_writes_nothing_where_the_request_points()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 10);
        string output = fixture.Combine("not-written");
        var warmUp = new JitWarmUp { MaxPasses = 3, Settle = TimeSpan.FromMilliseconds(50), MaxSettle = TimeSpan.FromMilliseconds(200) };
        var result = await TokenizeBenchmark.RunAsync(new TokenizeBenchmarkRequest(fixture.Request(output)) { Images = 8, WarmUp = warmUp });
        Assert.Equal(8, result.Images);
        // Passes of one batch (4 images), at least two on each side.
        Assert.True(result.WarmUpImages is 8 or 12, $"{result}");
        Assert.InRange(result.WarmUpSteps, 2, 3);
        Assert.True(result.ForwardOnlyImagesPerSecond > 0 && result.PipelineImagesPerSecond > 0, $"{result}");
        Assert.False(Directory.Exists(output));

        // More images than the data has: both sides time the data's 11 samples (10 images and the broken file).
        var all = await TokenizeBenchmark.RunAsync(new TokenizeBenchmarkRequest(fixture.Request(output)) { Images = 50, WarmUp = warmUp with { MaxPasses = 2 } });
        Assert.Equal(11, all.Images);
    }

    [Fact]
    public async Task Tokenize_writes_verified_shards_that_arrow_reads_with_one_row_per_view_and_the_broken_image_quarantined()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        string output = fixture.Combine("shards");
        var result = await TokenizeJob.RunAsync(fixture.Request(output));
        var manifest = result.Manifest;

        Assert.Equal(11, manifest.SampleCount);
        Assert.Equal(1, manifest.Quarantined);
        Assert.Equal(20, manifest.Rows);
        Assert.True(manifest.Shards.Count >= 3, $"a 12 kB target must cut several shards (got {manifest.Shards.Count})");
        Assert.Equal(16, manifest.CodeLength);
        Assert.Equal(64, manifest.CodebookSize);
        Assert.Equal([16, 24], manifest.FeatureShape!);
        Assert.NotNull(manifest.Configuration.Tokenizer);
        Assert.Equal(ModelIdentity.Sha256Of(Path.Combine(fixture.Tokenizer, "weights.safetensors")), manifest.Configuration.Tokenizer!.WeightsSha256);
        string quarantine = File.ReadAllText(Path.Combine(output, "quarantine.jsonl"));
        Assert.Contains("zz_broken.JPEG", quarantine);
        Assert.False(File.Exists(Path.Combine(output, TokenizeJob.ProgressFileName)), "the journal goes once the manifest is written");

        var report = await ShardVerifier.VerifyAsync(output);
        Assert.True(report.Ok, string.Join("\n", report.Problems));
        Assert.Equal(20, report.RowsChecked);

        var rows = await RowsOf(output);
        Assert.Equal(10, rows.Select(r => r.SampleId).Distinct().Count());
        Assert.All(rows.GroupBy(r => r.SampleId), g => Assert.Equal([0, 1], g.Select(r => r.View).Order()));
        Assert.All(rows, r => Assert.NotNull(r.Label));
        Assert.All(rows, r => Assert.Equal(16 * 24, r.Features!.Length));
        Assert.All(rows, r => Assert.Equal(16 * 2, r.FeatureScales!.Length));
        Assert.All(rows, r => Assert.True(r.Image!.Length > 100 && r.Image[0] == 0xFF && r.Image[1] == 0xD8, "the image column holds JPEG bytes"));
        using (var stored = NetVips.Image.NewFromBuffer(rows[0].Image!))
            Assert.True(Math.Max(stored.Width, stored.Height) <= 48);
        Assert.NotEqual(rows[0].Augment, rows[1].Augment);

        // Apache Arrow's C++ Parquet reader (ParquetSharp) opens every shard and sees the same values.
        int arrowRows = 0;
        foreach (var shard in manifest.Shards)
        {
            using var file = new ParquetFileReader(Path.Combine(output, shard.Name));
            var names = Enumerable.Range(0, file.FileMetaData.Schema.NumColumns).Select(i => file.FileMetaData.Schema.Column(i).Path.ToDotString()).ToList();
            Assert.Equal(["sample_id", "path", "label", "view", "augment", "source_width", "source_height", "codes.list.element", "features", "feature_scales", "image"], names);
            for (int g = 0; g < file.FileMetaData.NumRowGroups; g++)
            {
                using var group = file.RowGroup(g);
                long count = group.MetaData.NumRows;
                string[] ids = group.Column(0).LogicalReader<string>().ReadAll((int)count);
                short[][] codes = group.Column(7).LogicalReader<short[]>().ReadAll((int)count);
                for (int i = 0; i < count; i++)
                {
                    Assert.Equal(rows[arrowRows].SampleId, ids[i]);
                    Assert.Equal(rows[arrowRows].Codes, codes[i]);
                    arrowRows++;
                }
            }
        }
        Assert.Equal(20, arrowRows);
    }

    [Fact]
    public async Task A_stored_row_replays_its_augmentation_to_the_same_codes()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 4);
        string output = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(output) with { TeacherDirectory = null, StoreImageMaxSide = null });
        var rows = await RowsOf(output);
        var (_, module) = ModelDirectory.Load(fixture.Tokenizer);
        using var tokenizer = (VqKd)module;
        tokenizer.eval();
        foreach (var row in rows.Take(4))
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(fixture.Data, row.Path));
            var header = ImageHeader.Read(bytes, DecodeLimits.Default);
            Assert.Equal((header.Width, header.Height), (row.SourceWidth, row.SourceHeight));
            var parameters = AugmentParams.FromJson(row.Augment);
            var shapes = parameters.Views.Select(v => new ViewShape(v.Width, v.Height)).ToList();
            var pixels = new byte[shapes[0].Bytes];
            Augmenter.Render(bytes, header, parameters, shapes, [pixels]);
            var floats = new float[pixels.Length];
            PixelNormalizer.ToFloat(pixels, floats, imageNetStatistics: true);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var codes = tokenizer.Tokenize(tensor(floats, [1, 3, 32, 32])).to(ScalarType.Int16).data<short>().ToArray();
            Assert.Equal(row.Codes, codes);
        }
    }

    [Fact]
    public async Task The_same_request_gives_identical_shards_and_two_parts_give_the_same_rows_as_one()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        var first = (await TokenizeJob.RunAsync(fixture.Request(fixture.Combine("a")))).Manifest;
        var second = (await TokenizeJob.RunAsync(fixture.Request(fixture.Combine("b")))).Manifest;
        Assert.Equal(first.Shards.Select(s => s.Sha256), second.Shards.Select(s => s.Sha256));

        var whole = await RowsOf(fixture.Combine("a"));
        var parts = new List<ShardRow>();
        for (int part = 0; part < 2; part++)
        {
            string folder = fixture.Combine($"part{part}");
            var manifest = (await TokenizeJob.RunAsync(fixture.Request(folder) with { ShardIndex = part, ShardCount = 2 })).Manifest;
            Assert.All(manifest.Shards, s => Assert.StartsWith($"part-{part:D5}-", s.Name));
            parts.AddRange(await RowsOf(folder));
        }
        static string Key(ShardRow r) => $"{r.SampleId}/{r.View}/{string.Join(',', r.Codes!)}/{Convert.ToHexString(r.Features!)}/{r.Augment}";
        Assert.Equal(whole.Select(Key), parts.Select(Key));

        var merged = await ShardMerger.MergeAsync([fixture.Combine("part1"), fixture.Combine("part0")], fixture.Combine("merged"));
        Assert.Equal(first.Rows, merged.Rows);
        Assert.Equal(first.Quarantined, merged.Quarantined);
        Assert.True((await ShardVerifier.VerifyAsync(fixture.Combine("merged"))).Ok);
        Assert.Equal(whole.Select(Key), (await RowsOf(fixture.Combine("merged"))).Select(Key));
        Assert.Contains("exactly once", (await Assert.ThrowsAsync<InvalidDataException>(() => ShardMerger.MergeAsync([fixture.Combine("part0")], fixture.Combine("m2")))).Message);
        Assert.Contains("another configuration", (await Assert.ThrowsAsync<InvalidDataException>(() => ShardMerger.MergeAsync([fixture.Combine("part0"), fixture.Combine("a")], fixture.Combine("m3")))).Message);

        // A corrupted part: the merge refuses, commits no manifest, removes what it copied, and succeeds once repaired.
        string broken = Path.Combine(fixture.Combine("part1"), ShardManifest.Read(fixture.Combine("part1")).Shards[0].Name);
        byte[] intact = File.ReadAllBytes(broken);
        byte[] flipped = intact.ToArray();
        flipped[flipped.Length / 2] ^= 1;
        File.WriteAllBytes(broken, flipped);
        string retried = fixture.Combine("m4");
        var corrupted = await Assert.ThrowsAsync<InvalidDataException>(() => ShardMerger.MergeAsync([fixture.Combine("part0"), fixture.Combine("part1")], retried));
        Assert.Contains(broken, corrupted.Message);
        Assert.False(File.Exists(Path.Combine(retried, ShardManifest.FileName)));
        Assert.Empty(Directory.EnumerateFiles(retried, "*.parquet"));
        File.WriteAllBytes(broken, intact);
        Assert.Equal(first.Rows, (await ShardMerger.MergeAsync([fixture.Combine("part0"), fixture.Combine("part1")], retried)).Rows);
    }

    [Fact]
    public async Task Inspect_counts_codebook_usage_and_draws_its_pictures()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        string output = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(output));
        var rows = await RowsOf(output);
        var inspection = await ShardInspector.InspectAsync(output, fixture.Combine("pictures"), samples: 4);
        var usage = inspection.Codebook!;
        Assert.Equal(rows.Count * 16L, usage.Counts.Sum());
        Assert.Equal(rows.SelectMany(r => r.Codes!).Distinct().Count(), usage.Used);
        Assert.InRange(usage.Entropy, 0, Math.Log2(usage.Used) + 1e-9);
        Assert.Contains(inspection.Columns, c => c.Column == "codes" && c.Bytes > 0);
        Assert.Contains(inspection.Columns, c => c.Column == "image" && c.BytesPerRow > 100);
        Assert.Equal(2, inspection.Pictures.Count);
        foreach (string picture in inspection.Pictures)
        {
            using var png = NetVips.Image.NewFromFile(picture);
            Assert.True(png.Width > 100 && png.Height > 50, picture);
        }
    }

    [Fact]
    public async Task An_interrupted_run_resumes_to_exactly_the_rows_of_an_uninterrupted_one()
    {
        using var fixture = await TokenizeFixture.CreateAsync();
        var uninterrupted = (await TokenizeJob.RunAsync(fixture.Request(fixture.Combine("whole")))).Manifest;

        string output = fixture.Combine("resumed");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<TokenizeProgress>(p => { if (p.Shards >= 2) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => TokenizeJob.RunAsync(fixture.Request(output), progress, stop.Token));
        }
        Assert.False(File.Exists(Path.Combine(output, ShardManifest.FileName)));
        Assert.True(File.Exists(Path.Combine(output, TokenizeJob.ProgressFileName)), "finished shards are journaled");
        // What a power cut can leave: a half-written temporary and a shard renamed before the journal recorded it.
        File.WriteAllBytes(Path.Combine(output, ".part-00000-00007.123.abc.partial.parquet"), [1, 2, 3]);
        File.WriteAllBytes(Path.Combine(output, "part-00000-00009.parquet"), [4, 5, 6]);

        var resumed = await TokenizeJob.RunAsync(fixture.Request(output));
        Assert.True(resumed.ResumedFromSample > 0, "the second run starts after the journaled shards");
        Assert.Equal(uninterrupted.Shards.Select(s => (s.Name, s.Sha256, s.FirstSample, s.Samples)), resumed.Manifest.Shards.Select(s => (s.Name, s.Sha256, s.FirstSample, s.Samples)));
        Assert.Equal(uninterrupted.Rows, resumed.Manifest.Rows);
        Assert.Equal(1, resumed.Manifest.Quarantined);
        Assert.Equal(File.ReadAllText(Path.Combine(fixture.Combine("whole"), "quarantine.jsonl")), File.ReadAllText(Path.Combine(output, "quarantine.jsonl")));
        Assert.True((await ShardVerifier.VerifyAsync(output)).Ok);

        var again = await TokenizeJob.RunAsync(fixture.Request(output));
        Assert.True(again.AlreadyComplete);
        await Assert.ThrowsAsync<InvalidOperationException>(() => TokenizeJob.RunAsync(fixture.Request(output) with { Seed = 8 }));
    }

    [Fact]
    public async Task A_killed_process_resumes_with_no_duplicate_and_no_loss()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 40);
        var request = fixture.Request(fixture.Combine("whole")) with { BatchSize = 2, TargetShardBytes = 6000 };
        var uninterrupted = (await TokenizeJob.RunAsync(request)).Manifest;

        string output = fixture.Combine("killed");
        string[] args = ["tokenize", "--data", fixture.Data, "--layout", "imagenet", "--tokenizer", fixture.Tokenizer, "--teacher", fixture.Teacher,
            "--views", "2", "--seed", "7", "--out", output, "--store-image", "max-side=48,quality=90", "--features", "int8", "--batch", "2",
            "--workers", "2", "--shard-mb", (6000 / 1048576.0).ToString("R", System.Globalization.CultureInfo.InvariantCulture), "--row-group-rows", "4"];
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "MimFlow.Cli.dll"));
        foreach (string arg in args) start.ArgumentList.Add(arg);
        using (var process = System.Diagnostics.Process.Start(start)!)
        {
            _ = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!File.Exists(Path.Combine(output, TokenizeJob.ProgressFileName)) && !process.HasExited && DateTime.UtcNow < deadline) await Task.Delay(2);
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
        Assert.False(File.Exists(Path.Combine(output, ShardManifest.FileName)), "the process must die before it finishes for this test to mean anything");

        var resumed = await TokenizeJob.RunAsync(request with { OutputDirectory = output });
        Assert.Equal(uninterrupted.Shards.Select(s => s.Sha256), resumed.Manifest.Shards.Select(s => s.Sha256));
        Assert.Equal(uninterrupted.Rows, resumed.Manifest.Rows);
        Assert.True((await ShardVerifier.VerifyAsync(output)).Ok);
    }

    [Fact]
    public async Task Verify_names_corrupted_truncated_missing_and_unlisted_shards()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        string output = fixture.Combine("shards");
        var manifest = (await TokenizeJob.RunAsync(fixture.Request(output) with { TeacherDirectory = null, TargetShardBytes = 3000 })).Manifest;
        Assert.True(manifest.Shards.Count >= 3);
        string first = Path.Combine(output, manifest.Shards[0].Name), second = Path.Combine(output, manifest.Shards[1].Name), third = Path.Combine(output, manifest.Shards[2].Name);

        byte[] bytes = File.ReadAllBytes(first);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(first, bytes);
        using (var stream = new FileStream(second, FileMode.Open)) stream.SetLength(stream.Length - 10);
        File.Delete(third);
        File.WriteAllBytes(Path.Combine(output, "part-00000-00099.parquet"), [1]);

        var report = await ShardVerifier.VerifyAsync(output);
        Assert.False(report.Ok);
        Assert.Contains(report.Problems, p => p.StartsWith(first, StringComparison.Ordinal) && p.Contains("SHA-256"));
        Assert.Contains(report.Problems, p => p.StartsWith(second, StringComparison.Ordinal) && p.Contains("truncated"));
        Assert.Contains(report.Problems, p => p.StartsWith(third, StringComparison.Ordinal) && p.Contains("missing"));
        Assert.Contains(report.Problems, p => p.Contains("part-00000-00099.parquet") && p.Contains("does not list"));

        var cli = await CliHarness.RunAsync("shards", "verify", output);
        Assert.Equal(1, cli.ExitCode);
        Assert.Contains(first, cli.Error);

        File.Delete(Path.Combine(output, ShardManifest.FileName));
        Assert.Contains("no manifest", Assert.Single((await ShardVerifier.VerifyAsync(output)).Problems));
    }

    [Fact]
    public async Task The_cli_tokenizes_and_verifies()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 4);
        string output = fixture.Combine("shards");
        var run = await CliHarness.RunAsync("tokenize", "--data", fixture.Data, "--layout", "imagenet", "--tokenizer", fixture.Tokenizer, "--teacher", fixture.Teacher,
            "--views", "2", "--out", output, "--store-image", "max-side=40,quality=85", "--features", "fp16", "--batch", "2", "--shard-mb", "0.01");
        Assert.True(run.ExitCode == 0, run.Error);
        Assert.True(run.Output.Contains("8 (2 views per image)"), run.Output);
        var verify = await CliHarness.RunAsync("shards", "verify", output);
        Assert.True(verify.ExitCode == 0, verify.Error);
        Assert.Contains("8 rows checked", verify.Output);

        var bad = await CliHarness.RunAsync("tokenize", "--data", fixture.Data, "--layout", "imagenet", "--teacher", fixture.Teacher, "--out", fixture.Combine("x"), "--shard", "2/2");
        Assert.Equal(MimFlow.Cli.MimFlowCli.UsageError, bad.ExitCode);
        Assert.Contains("--shard '2/2'", bad.Error);
    }

    [Fact]
    public async Task Int8_features_dequantise_to_the_fp16_features_within_half_a_step()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 4);
        var request = fixture.Request(fixture.Combine("int8")) with { TokenizerDirectory = null, StoreImageMaxSide = null, Views = 1 };
        await TokenizeJob.RunAsync(request);
        await TokenizeJob.RunAsync(request with { OutputDirectory = fixture.Combine("fp16"), FeatureEncoding = FeatureEncoding.Fp16 });
        var quantised = await RowsOf(fixture.Combine("int8"));
        var reference = await RowsOf(fixture.Combine("fp16"));
        Assert.Equal(reference.Count, quantised.Count);
        for (int r = 0; r < reference.Count; r++)
        {
            var fp16 = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(reference[r].Features!).ToArray();
            var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(quantised[r].FeatureScales!).ToArray();
            var q = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(quantised[r].Features!).ToArray();
            int dim = q.Length / scales.Length;
            for (int i = 0; i < q.Length; i++)
            {
                double scale = (double)scales[i / dim], value = (double)fp16[i];
                Assert.True(Math.Abs(q[i] * scale - value) <= scale * 0.5 + Math.Abs(value) * 2e-3 + 1e-6, $"row {r} value {i}: {q[i]}·{scale} vs {value}");
            }
        }
    }

    [Fact]
    public async Task Ade20k_rows_store_the_label_map_at_the_stored_image_size()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 2);
        string ade = fixture.Combine("ade20k");
        await MimFlow.Datasets.Synthetic.SyntheticDatasets.WriteAsync(new MimFlow.Datasets.Synthetic.SynthesisOptions
        {
            Kind = MimFlow.Datasets.Synthetic.SyntheticKind.Ade20k, OutputDirectory = ade, Images = 4, MinSide = 64, MaxSide = 120, ValidationFraction = 0,
        });
        string output = fixture.Combine("shards");
        var manifest = (await TokenizeJob.RunAsync(fixture.Request(output) with { DataRoot = ade, Layout = MimFlow.Data.Sources.DatasetLayout.Ade20k, TeacherDirectory = null })).Manifest;
        Assert.True(manifest.Columns.LabelMap);
        var rows = await RowsOf(output);
        Assert.Equal(8, rows.Count);
        foreach (var row in rows)
        {
            Assert.Null(row.Label);
            using var image = NetVips.Image.NewFromBuffer(row.Image!);
            using var labels = NetVips.Image.NewFromBuffer(row.LabelMap!);
            Assert.Equal((image.Width, image.Height), (labels.Width, labels.Height));
            Assert.Equal(1, labels.Bands);
            Assert.InRange(labels.Max(), 1, 150);
        }
        Assert.True((await ShardVerifier.VerifyAsync(output)).Ok);
    }

    [Fact]
    public async Task Bench_tokenize_reports_pipeline_and_forward_only_rates_from_one_run()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string json = fixture.Combine("bench.json");
        var run = await CliHarness.RunAsync("bench", "tokenize", "--data", fixture.Data, "--layout", "imagenet", "--tokenizer", fixture.Tokenizer,
            "--teacher", fixture.Teacher, "--images", "8", "--batch", "4", "--json", json);
        Assert.True(run.ExitCode == 0, run.Error);
        using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
        var root = document.RootElement;
        double forward = root.GetProperty("forward_only_images_per_second").GetDouble(), pipeline = root.GetProperty("images_per_second").GetDouble();
        Assert.True(forward > 0 && pipeline > 0);
        Assert.Equal(pipeline / forward, root.GetProperty("ratio").GetDouble(), 1e-6);
        Assert.InRange(root.GetProperty("input_wait_share").GetDouble(), 0, 1);
        Assert.Equal("cpu-float32", root.GetProperty("arithmetic").GetString());
    }

    [Fact]
    public async Task A_codebook_too_large_for_int16_codes_is_refused_instead_of_wrapped()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 2);
        string large = fixture.Combine("vqkd-40k");
        var config = MimFlow.Models.Tokenizers.VqKdConfig.ForEncoder(new MimFlow.Models.Backbones.VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2 })
            with { Codes = 40_000, CodeDim = 4, DecoderDepth = 1, TeacherDim = 8 };
        var spec = new MimFlow.Models.Interop.ModelSpec("vqkd-test", Vqkd: config);
        using (var model = MimFlow.Models.Interop.ModelCatalog.Create(spec, seed: 1)) MimFlow.Models.Interop.ModelDirectory.Save(large, spec, model);
        string output = fixture.Combine("shards");
        var error = await Assert.ThrowsAsync<ArgumentException>(() => TokenizeJob.RunAsync(fixture.Request(output) with { TokenizerDirectory = large, TeacherDirectory = null }));
        Assert.Contains("40,000 codes", error.Message);
        Assert.False(File.Exists(Path.Combine(output, ShardManifest.FileName)));
    }

    [Fact]
    public async Task Tokenize_over_the_folder_its_wds_pack_and_its_hf_parquet_pack_writes_the_same_rows()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 8);
        string wds = fixture.Combine("wds"), hf = fixture.Combine("hf");
        await MimFlow.Data.Packing.DatasetPacker.PackAsync(new MimFlow.Data.Packing.PackRequest
        {
            From = fixture.Data, Format = MimFlow.Data.Packing.PackFormat.Wds, OutputDirectory = wds, ShardBytes = 6_000,
        });
        await MimFlow.Data.Packing.DatasetPacker.PackAsync(new MimFlow.Data.Packing.PackRequest
        {
            From = fixture.Data, Format = MimFlow.Data.Packing.PackFormat.HfParquet, OutputDirectory = hf, ShardBytes = 6_000, RowGroupRows = 3,
        });
        var results = new List<(TokenizeResult Result, List<ShardRow> Rows)>();
        foreach (var (data, layout) in new[] { (fixture.Data, DatasetLayout.ImageNet), (wds, DatasetLayout.Wds), (hf, DatasetLayout.HfParquet) })
        {
            string output = fixture.Combine("shards-" + DatasetLayouts.Name(layout));
            var result = await TokenizeJob.RunAsync(fixture.Request(output) with { DataRoot = data, Layout = layout });
            results.Add((result, await RowsOf(output)));
        }
        var reference = results[0];
        Assert.Equal(1, reference.Result.Manifest.Quarantined);
        Assert.Equal(16, reference.Rows.Count);
        foreach (var (result, rows) in results.Skip(1))
        {
            Assert.Equal(reference.Result.Manifest.SampleCount, result.Manifest.SampleCount);
            Assert.Equal(reference.Result.Manifest.Quarantined, result.Manifest.Quarantined);
            Assert.Equal(reference.Rows.Count, rows.Count);
            for (int r = 0; r < rows.Count; r++)
            {
                // Everything but the identity: the packed forms name shards and keys or rows.
                Assert.Equal(reference.Rows[r] with { SampleId = "", Path = "" }, rows[r] with { SampleId = "", Path = "" }, ShardRowComparer.Instance);
                Assert.Equal(SampleIndex.SampleId(rows[r].Path), rows[r].SampleId);
            }
        }
        Assert.StartsWith("imagenet-train-", results[1].Rows[0].Path);
        Assert.StartsWith("train-00000-of-", results[2].Rows[0].Path);
    }

    /// <summary>Rows equal by value, their arrays by content.</summary>
    private sealed class ShardRowComparer : IEqualityComparer<ShardRow>
    {
        public static ShardRowComparer Instance { get; } = new();

        public bool Equals(ShardRow? x, ShardRow? y) =>
            x is not null && y is not null && x.SampleId == y.SampleId && x.Path == y.Path && x.Label == y.Label && x.View == y.View && x.Augment == y.Augment
            && x.SourceWidth == y.SourceWidth && x.SourceHeight == y.SourceHeight && Same(x.Codes, y.Codes) && Same(x.Features, y.Features)
            && Same(x.FeatureScales, y.FeatureScales) && Same(x.Image, y.Image) && Same(x.LabelMap, y.LabelMap);

        public int GetHashCode(ShardRow row) => row.View;

        private static bool Same<T>(T[]? a, T[]? b) where T : IEquatable<T> => a is null ? b is null : b is not null && a.AsSpan().SequenceEqual(b);
    }
}
