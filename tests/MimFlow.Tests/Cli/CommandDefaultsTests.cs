using System.CommandLine;
using MimFlow.Cli.Commands;
using MimFlow.Data.Sources;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Segmentation;

namespace MimFlow.Tests.Cli;

/// <summary>
/// One source of defaults: a command line that gives only the required values yields exactly the request record's
/// defaults, whatever the command's options; only what the user typed is applied.
/// </summary>
public sealed class CommandDefaultsTests
{
    private static (ParseResult Parsed, T Options) Parse<T>(T options, Action<T, Command> addTo, params string[] args)
    {
        var command = new Command("under-test");
        addTo(options, command);
        var parsed = command.Parse(args);
        Assert.Empty(parsed.Errors);
        return (parsed, options);
    }

    [Fact]
    public void Bare_finetune_segment_trains_with_the_segmentation_recipe_not_the_classification_defaults()
    {
        // The defect this guards: the CLI's classification defaults (batch 64, 100 epochs) overrode BEiT's ADE20K recipe.
        var (parsed, options) = Parse(new FinetuneOptions(), (o, c) => o.AddTo(c), "--task", "segment", "--model", "m", "--data", "d", "--out", "o");
        var request = options.Segmentation(parsed);
        Assert.Equal(new SegmentRequest { Model = "m", Data = "d", OutputDirectory = "o" }, request);
        Assert.Equal(16, request.BatchSize);
        Assert.Equal(DatasetLayout.Ade20k, request.Layout);
    }

    [Theory]
    [InlineData(FinetuneRequest.Classify)]
    [InlineData(FinetuneRequest.LinearProbe)]
    public void Bare_finetune_classify_and_probe_take_the_fine_tuning_records_defaults(string task)
    {
        var (parsed, options) = Parse(new FinetuneOptions(), (o, c) => o.AddTo(c), "--task", task, "--model", "m", "--data", "d", "--out", "o");
        Assert.Equal(new FinetuneRequest { Task = task, Model = "m", Data = "d", OutputDirectory = "o" }, options.Classification(parsed));
    }

    [Fact]
    public void Typed_values_are_applied_and_an_option_of_the_other_task_is_refused()
    {
        var (parsed, options) = Parse(new FinetuneOptions(), (o, c) => o.AddTo(c),
            "--task", "segment", "--model", "m", "--data", "d", "--out", "o", "--epochs", "3", "--decoder", "setr-pup", "--decoder-channels", "64");
        var request = options.Segmentation(parsed);
        Assert.Equal(3, request.Epochs);
        Assert.Equal(SegmentRequest.SetrDecoder, request.Decoder);
        Assert.Equal(64, request.Head.Channels);
        var (mixed, sameOptions) = Parse(new FinetuneOptions(), (o, c) => o.AddTo(c), "--task", "segment", "--model", "m", "--data", "d", "--out", "o", "--no-mixup");
        Assert.Contains("--no-mixup", Assert.Throws<MimFlow.Cli.UsageException>(() => sameOptions.Segmentation(mixed)).Message);
    }

    [Theory]
    [InlineData("classify", "imagenet")]
    [InlineData("segment", "ade20k")]
    public void Bare_eval_takes_the_evaluation_records_defaults(string task, string layout)
    {
        var (parsed, options) = Parse(new EvalOptions(), (o, c) => o.AddTo(c), "--task", task, "--model", "m", "--data", "d", "--layout", layout);
        if (task == "segment") Assert.Equal(new SegmentEvaluateOptions(), options.Segmentation(parsed));
        else Assert.Equal(new EvaluateOptions(), options.Classification(parsed));
    }

    [Fact]
    public void Bare_pretrain_takes_the_pretraining_records_defaults()
    {
        var (parsed, options) = Parse(new PretrainOptions(), (o, c) => o.AddTo(c), "--objective", "beit", "--model", "beit-base", "--out", "o", "--shards", "s", "--steps", "5");
        Assert.Equal(new MimFlow.Training.Pretraining.PretrainRequest { Objective = "beit", Model = "beit-base", OutputDirectory = "o", Shards = "s", Steps = 5 }, options.Request(parsed));
    }

    [Fact]
    public void Bare_train_tokenizer_takes_the_vqkd_records_defaults()
    {
        var (parsed, options) = Parse(new TrainTokenizerOptions(), (o, c) => o.AddTo(c), "--teacher", "t", "--data", "d", "--out", "o", "--steps", "5");
        Assert.Equal(new MimFlow.Training.Tokenizer.VqKdTrainRequest { Data = "d", Teacher = "t", OutputDirectory = "o", Steps = 5 }, options.Request(parsed));
    }

    [Fact]
    public void Bare_tokenize_takes_the_tokenize_records_defaults_and_typed_values_apply()
    {
        var (parsed, options) = Parse(new TokenizeOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "imagenet", "--out", "o");
        Assert.Equal(new MimFlow.Precompute.Tokenize.TokenizeRequest { DataRoot = "d", OutputDirectory = "o" }, options.Request(parsed));
        var (typed, same) = Parse(new TokenizeOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "imagenet", "--out", "o",
            "--shard", "2/4", "--store-image", "max-side=256", "--features", "int8", "--teacher-layers", "4", "--split", "val");
        var request = same.Request(typed);
        Assert.Equal((2, 4, 256, 90), (request.ShardIndex, request.ShardCount, request.StoreImageMaxSide, request.StoreImageQuality));
        Assert.Equal((MimFlow.Shards.FeatureEncoding.Int8, 4, DatasetSplit.Validation), (request.FeatureEncoding, request.Teacher.LastLayers, request.Split));
    }

    [Fact]
    public void Bare_datasets_commands_take_their_records_defaults()
    {
        var (synth, synthOptions) = Parse(new SynthOptions(), (o, c) => o.AddTo(c), "--kind", "ade20k", "--out", "o");
        Assert.Equal(new MimFlow.Datasets.Synthetic.SynthesisOptions { Kind = MimFlow.Datasets.Synthetic.SyntheticKind.Ade20k, OutputDirectory = "o" }, synthOptions.Request(synth));
        var (check, checkOptions) = Parse(new DatasetCheckOptions(), (o, c) => o.AddTo(c), "--data", "d");
        Assert.Equal(new MimFlow.Data.Checks.DatasetCheckRequest("d"), checkOptions.Request(check));
        var (pack, packOptions) = Parse(new PackOptions(), (o, c) => o.AddTo(c), "--from", "f", "--layout", "imagenet", "--format", "wds", "--out", "o");
        Assert.Equal(new MimFlow.Data.Packing.PackRequest { From = "f", OutputDirectory = "o" }, packOptions.Request(pack));
    }

    [Fact]
    public void Bare_bench_takes_the_suite_records_defaults()
    {
        var (parsed, options) = Parse(new SuiteCommandOptions(), (o, c) => o.AddTo(c));
        Assert.Equal(new MimFlow.Benchmarks.SuiteOptions(), options.Request(parsed));
    }

    [Fact]
    public void Bare_bench_data_takes_the_data_bench_records_defaults_and_typed_values_apply()
    {
        using var dir = new TemporaryDirectory();
        MimFlow.Tests.Data.TestImages.Write(dir.Combine("a.jpg"), MimFlow.Tests.Data.TestImages.Jpeg(40, 30));
        var (parsed, options) = Parse(new DataBenchOptions(), (o, c) => o.AddTo(c), "--data", dir.Path, "--layout", "folder");
        var request = options.Request(parsed);
        var defaults = new MimFlow.Benchmarks.DataBenchRequest(request.Data);
        // Workers is a list: records compare it by reference, so it is compared apart.
        Assert.Equal(defaults.Workers, request.Workers);
        Assert.Equal(defaults, request with { Workers = defaults.Workers });
        Assert.Equal(1, request.Data.Count);
        var (typed, same) = Parse(new DataBenchOptions(), (o, c) => o.AddTo(c), "--data", dir.Path, "--layout", "folder",
            "--workers", "1,3", "--images", "10", "--batch", "5", "--recipe", "finetune", "--python", "py", "--pin", "0", "--stages");
        var applied = same.Request(typed);
        Assert.Equal([1, 3], applied.Workers);
        Assert.Equal((10, 5, "finetune", "py", "0", true), (applied.Images, applied.BatchSize, applied.Recipe, applied.Python, applied.Pin, applied.Stages));
    }

    [Fact]
    public void Bare_bench_tokenize_takes_the_tokenize_benchmarks_records_defaults_and_typed_values_apply()
    {
        var (parsed, options) = Parse(new TokenizeBenchOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "imagenet");
        Assert.Equal(MimFlow.Precompute.Tokenize.TokenizeBenchmarkRequest.For("d"), options.Request(parsed));
        var (typed, same) = Parse(new TokenizeBenchOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "wds", "--split", "val",
            "--tokenizer", "t", "--images", "8", "--batch", "4", "--workers", "2");
        var request = same.Request(typed);
        Assert.Equal((8, "t", 4, 2), (request.Images, request.Tokenize.TokenizerDirectory, request.Tokenize.BatchSize, request.Tokenize.DecodeWorkers));
        Assert.Equal((DatasetLayout.Wds, DatasetSplit.Validation), (request.Tokenize.Layout, request.Tokenize.Split));
    }

    [Fact]
    public void Bare_bench_train_takes_the_train_benchmarks_records_defaults_and_typed_values_apply()
    {
        var (parsed, options) = Parse(new TrainBenchOptions(), (o, c) => o.AddTo(c));
        Assert.Equal(new MimFlow.Benchmarks.TrainBenchRequest(), options.Request(parsed));
        var (typed, same) = Parse(new TrainBenchOptions(), (o, c) => o.AddTo(c),
            "--model", "beit-tiny", "--batch", "8", "--dtype", "fp32", "--steps", "2", "--peak-tflops", "100", "--peer", "p.py", "--python", "py");
        var request = same.Request(typed);
        Assert.Equal(new MimFlow.Training.Benchmarks.TrainStepRequest
        {
            Model = "beit-tiny", BatchSize = 8, ComputeType = TorchSharp.torch.ScalarType.Float32, Steps = 2, PeakTflops = 100,
        }, request.Step);
        Assert.Equal(("p.py", "py"), (request.Peer, request.Python));
    }

    [Fact]
    public async Task Bare_masks_and_model_init_write_what_their_records_defaults_write()
    {
        using var dir = new TemporaryDirectory();
        var masks = await CliHarness.RunAsync("masks", "--count", "4", "--out", dir.Combine("cli.npy"));
        Assert.True(masks.ExitCode == 0, masks.Error);
        MimFlow.Data.Masking.MaskSet.Write(new MimFlow.Data.Masking.MaskSetRequest(4, dir.Combine("library.npy")));
        Assert.Equal(File.ReadAllBytes(dir.Combine("library.npy")), File.ReadAllBytes(dir.Combine("cli.npy")));

        MimFlow.Torch.Backend.TorchBackend.EnsureLoaded();
        var init = await CliHarness.RunAsync("model", "init", "--arch", "vit-tiny", "--out", dir.Combine("cli-model"));
        Assert.True(init.ExitCode == 0, init.Error);
        MimFlow.Models.Interop.ModelInit.Run(new MimFlow.Models.Interop.ModelInitRequest("vit-tiny", dir.Combine("library-model")));
        foreach (string file in new[] { "config.json", "weights.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Combine("library-model"), file)), File.ReadAllBytes(Path.Combine(dir.Combine("cli-model"), file)));
    }

    [Fact]
    public void Bare_scan_takes_the_loader_records_defaults()
    {
        var (parsed, options) = Parse(new ScanOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "imagenet", "--out", "o");
        Assert.Equal(new MimFlow.Data.Pipeline.LoaderOptions(), options.Loader(parsed));
        Assert.Equal(DatasetSplit.Train, options.Data.SplitOf(parsed));
        var (typed, same) = Parse(new ScanOptions(), (o, c) => o.AddTo(c), "--data", "d", "--layout", "imagenet", "--out", "o", "--workers", "3", "--max-pixels", "1000");
        Assert.Equal((3, 1000L), (same.Loader(typed).DecodeWorkers, same.Loader(typed).Limits.MaxPixels));
    }

    [Fact]
    public void Bare_datasets_preview_takes_the_preview_records_defaults()
    {
        using var dir = new TemporaryDirectory();
        MimFlow.Tests.Data.TestImages.Write(dir.Combine("a.jpg"), MimFlow.Tests.Data.TestImages.Jpeg(40, 30));
        var (parsed, options) = Parse(new PreviewOptions(), (o, c) => o.AddTo(c), "--data", dir.Path, "--layout", "folder", "--out", "o.png");
        var request = options.Request(parsed);
        Assert.Equal(new MimFlow.Data.Previews.PreviewRequest(request.Data, "o.png"), request);
        Assert.Equal(1, request.Data.Count);
    }

    [Fact]
    public void Bare_model_import_and_forward_take_their_records_defaults()
    {
        var (import, importOptions) = Parse(new ModelImportOptions(), (o, c) => o.AddTo(c), "--from", "timm", "--weights", "w", "--out", "o");
        Assert.Equal(new MimFlow.Models.Interop.ModelImportRequest("timm", "w", "o"), importOptions.Request(import));
        var (forward, forwardOptions) = Parse(new ModelForwardOptions(), (o, c) => o.AddTo(c), "--model", "m", "--input", "i", "--output", "o");
        Assert.Equal(new MimFlow.Models.Interop.ModelForwardRequest("m", "i", "o"), forwardOptions.Request(forward));
        Assert.Null(forwardOptions.Device.Resolve(forward));
    }

    [Fact]
    public async Task Bare_plot_and_status_do_what_the_library_does_by_default()
    {
        using var dir = new TemporaryDirectory();
        foreach (string run in new[] { "cli", "library" })
        {
            Directory.CreateDirectory(dir.Combine(run));
            using var log = MimFlow.Training.Runs.MetricsLog.Open(dir.Combine(run), keepThroughStep: null);
            for (long step = 0; step < 4; step++) log.Write(new Dictionary<string, object> { ["step"] = step, ["loss"] = 4.0 - step, ["lr"] = 1e-3, ["images_per_second"] = 5.0 });
        }
        // plot: no --out draws into the run folder, as RunPlots.Draw does without a folder.
        var plot = await CliHarness.RunAsync("plot", dir.Combine("cli"));
        Assert.True(plot.ExitCode == 0, plot.Error);
        var library = MimFlow.Training.Runs.RunPlots.Draw(dir.Combine("library"));
        Assert.All(library, p => Assert.True(File.Exists(Path.Combine(dir.Combine("cli"), Path.GetFileName(p))), p));
        // status: no --json renders the table, not the JSON object.
        var status = await CliHarness.RunAsync("status", dir.Combine("cli"));
        Assert.True(status.ExitCode == 0, status.Error);
        Assert.DoesNotContain("\"kind\"", status.Output);
        var json = await CliHarness.RunAsync("status", dir.Combine("cli"), "--json");
        Assert.Contains("\"kind\"", json.Output);
    }
}
