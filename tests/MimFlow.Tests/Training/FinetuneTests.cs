using System.Text.Json.Nodes;
using MimFlow.Core.Randomness;
using MimFlow.Core.Safetensors;
using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Tests.Cli;
using MimFlow.Torch.Backend;
using MimFlow.Training.Finetuning;
using MimFlow.Training.Runs;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

/// <summary>
/// A generated 3-class ImageNet-layout set with a val split (the classes differ by colour, shape and texture), a
/// 6-class set with one val image per class, and a tiny BEiT (32 px, 4×4 patches) saved as a model directory.
/// </summary>
public sealed class FinetuneFixture : IAsyncLifetime
{
    private readonly TemporaryDirectory directory = new();

    public string Data => directory.Combine("data");
    public string SixClasses => directory.Combine("six");
    public string Backbone => directory.Combine("beit");

    public string Combine(params string[] parts) => directory.Combine(parts);

    public static VitConfig TinyBeit => Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2 };

    public async Task InitializeAsync()
    {
        TorchBackend.EnsureLoaded();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = Data, Images = 120, Classes = 3, MinSide = 40, MaxSide = 80, ValidationFraction = 0.25, Seed = 5,
        });
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = SixClasses, Images = 12, Classes = 6, MinSide = 40, MaxSide = 60, ValidationFraction = 0.5, Seed = 6,
        });
        using var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: TinyBeit), seed: 3);
        ModelDirectory.Save(Backbone, new ModelSpec("beit-test", Config: TinyBeit), model);
    }

    public Task DisposeAsync()
    {
        directory.Dispose();
        return Task.CompletedTask;
    }
}

public sealed class FinetuneTests(FinetuneFixture fixture, ITestOutputHelper output) : IClassFixture<FinetuneFixture>
{
    /// <summary>
    /// A short run that learns: BEiT's recipe without RandAugment and random erasing, whose posterize, solarize and
    /// invert at magnitude 9 wipe out the colour that tells these classes apart on about a third of the images, so a
    /// randomly initialised tiny ViT would need many more epochs than a test can afford.
    /// </summary>
    private FinetuneRequest Request(string task, string run) => new()
    {
        Task = task, Model = fixture.Backbone, Data = fixture.Data, OutputDirectory = fixture.Combine(run), Epochs = 12, BatchSize = 10, Seed = 1,
        DecodeWorkers = 2, LearningRate = 5e-3, WarmupEpochs = 1, RandAugment = null, RandomErasing = 0,
    };

    private static float[] Values(Tensor tensor) => tensor.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();

    private static IEnumerable<double> Row(float[] values, int row, int width) => values.Skip(row * width).Take(width).Select(v => (double)v);

    [Fact]
    public void Mixup_and_cutmix_targets_sum_to_one_and_follow_the_drawn_lambda()
    {
        TorchBackend.EnsureLoaded();
        var mixer = new MixupCutmix(new MixupOptions(), classes: 3);
        long[] labels = [0, 1, 2, 1];
        using var labelTensor = tensor(labels);
        using var generator = new Generator(1);
        using var pixels = rand([4, 3, 16, 16], generator: generator);
        float[] original = Values(pixels);
        var kinds = new HashSet<MixKind>();
        for (ulong step = 0; step < 40; step++)
        {
            var random = StableRandom.For(9, "mixup", step);
            var (mixed, targets, draw) = mixer.Apply(pixels, labelTensor, ref random);
            using (mixed)
            using (targets)
            {
                var replay = StableRandom.For(9, "mixup", step);
                Assert.Equal(draw, mixer.Draw(16, 16, ref replay));
                kinds.Add(draw.Kind);
                float[] t = Values(targets), x = Values(mixed);
                for (int row = 0; row < 4; row++)
                {
                    Assert.Equal(1.0, Row(t, row, 3).Sum(), 1e-6);
                    for (int c = 0; c < 3; c++)
                    {
                        // timm: λ·(on|off)(y) + (1 − λ)·(on|off)(y of the mirrored row), on = 1 − 0.1 + 0.1/3, off = 0.1/3.
                        double Smooth(long label) => label == c ? 0.9 + 0.1 / 3 : 0.1 / 3;
                        Assert.Equal(draw.Lambda * Smooth(labels[row]) + (1 - draw.Lambda) * Smooth(labels[3 - row]), t[row * 3 + c], 1e-6);
                    }
                }
                for (int i = 0; i < x.Length; i++)
                {
                    int row = i / 768, within = i % 768, y = within % 256 / 16, column = within % 16;
                    float mine = original[i], mirrored = original[(3 - row) * 768 + within];
                    double expected = draw.Kind switch
                    {
                        MixKind.Mixup => draw.Lambda * mine + (1 - draw.Lambda) * mirrored,
                        MixKind.Cutmix when draw.Box is { } b && y >= b.Top && y < b.Bottom && column >= b.Left && column < b.Right => mirrored,
                        _ => mine,
                    };
                    Assert.Equal(expected, x[i], 1e-6);
                }
                if (draw.Box is { } box) Assert.Equal(1 - box.Area / 256.0, draw.Lambda, 12);
            }
        }
        Assert.Equal([MixKind.Mixup, MixKind.Cutmix], kinds.Order());
    }

    [Fact]
    public void Cutmix_boxes_and_corrected_lambdas_match_hand_computation()
    {
        // λ 0.75: √0.25 = 0.5, 16-pixel sides, ±8 around (5, 30), clipped to the 32×32 image.
        var box = MixupCutmix.CutmixBox(32, 32, 0.75, 5, 30);
        Assert.Equal(new CutBox(0, 13, 22, 32), box);
        Assert.Equal(1 - 130 / 1024.0, MixupCutmix.CorrectedLambda(box, 32, 32), 15);
        // λ 0.5 on 224²: int(224·0.7071) = 158, ±79 around (100, 100): fully inside, area 158².
        box = MixupCutmix.CutmixBox(224, 224, 0.5, 100, 100);
        Assert.Equal(new CutBox(21, 179, 21, 179), box);
        Assert.Equal(1 - 158.0 * 158 / (224 * 224), MixupCutmix.CorrectedLambda(box, 224, 224), 15);
        // Not square: 20×30, λ 0.5: sides int(14.14) = 14 and int(21.21) = 21 (odd: ±10), centre (19, 0).
        box = MixupCutmix.CutmixBox(20, 30, 0.5, 19, 0);
        Assert.Equal(new CutBox(12, 20, 0, 10), box);
        Assert.Equal(1 - 80 / 600.0, MixupCutmix.CorrectedLambda(box, 20, 30), 15);
    }

    [Fact]
    public void Label_smoothing_and_the_soft_target_cross_entropy_match_hand_values()
    {
        TorchBackend.EnsureLoaded();
        using var labels = tensor(new long[] { 2, 0 });
        using var smooth = MixupCutmix.SmoothedOneHot(labels, 4, 0.1);
        Assert.Equal([0.025f, 0.025f, 0.925f, 0.025f, 0.925f, 0.025f, 0.025f, 0.025f], Values(smooth));
        using var plain = MixupCutmix.Targets(labels, 4, 1.0, 0.1);
        Assert.Equal(Values(smooth), Values(plain));

        double[][] logits = [[1, 2, 3, 4], [0.5, -1, 0, 2]];
        using var logitTensor = tensor(logits.SelectMany(r => r.Select(v => (float)v)).ToArray(), [2, 4]);
        using var loss = MixupCutmix.SoftTargetCrossEntropy(logitTensor, smooth);
        // timm's LabelSmoothingCrossEntropy: (1 − ε)·nll + ε·mean(−log p), averaged over rows.
        double expected = 0;
        int[] truth = [2, 0];
        for (int r = 0; r < 2; r++)
        {
            double logSum = Math.Log(logits[r].Sum(Math.Exp));
            double[] logP = logits[r].Select(v => v - logSum).ToArray();
            expected += (0.9 * -logP[truth[r]] + 0.1 * logP.Average(v => -v)) / 2;
        }
        Assert.Equal(expected, loss.item<float>(), 1e-5);
    }

    [Fact]
    public void Beta_draws_have_the_beta_mean_and_variance()
    {
        foreach (double alpha in new[] { 0.8, 1.0 })
        {
            var random = new StableRandom(42);
            double[] draws = Enumerable.Range(0, 20_000).Select(_ => MixupCutmix.SampleBeta(ref random, alpha, alpha)).ToArray();
            Assert.All(draws, d => Assert.InRange(d, 0, 1));
            double mean = draws.Average(), variance = draws.Average(d => (d - mean) * (d - mean));
            Assert.InRange(mean, 0.49, 0.51);
            // Beta(α, α): variance 1 / (4·(2α + 1)): 0.0962 for 0.8, 1/12 for 1.
            Assert.InRange(variance, 1 / (4 * (2 * alpha + 1)) - 0.004, 1 / (4 * (2 * alpha + 1)) + 0.004);
        }
    }

    [Fact]
    public void Accuracy_counter_scores_hand_made_logits()
    {
        TorchBackend.EnsureLoaded();
        // Six classes; ranks of each row are the logits' order.
        float[] logits =
        [
            9, 8, 7, 6, 5, 4, // label 0: first
            9, 8, 7, 6, 5, 4, // label 5: sixth, outside the top 5
            1, 2, 3, 4, 5, 6, // label 1: fifth
            0, 0, 9, 0, 0, 1, // label 2: first
        ];
        long[] labels = [0, 5, 1, 2];
        var counter = new AccuracyCounter(6);
        using (var l = tensor(logits, [4, 6]))
        using (var y = tensor(labels))
            counter.Add(l, y);
        var result = counter.Result(["a", "b", "c", "d", "e", "f"]);
        Assert.Equal(4, result.Images);
        Assert.Equal(0.5, result.Top1);
        Assert.Equal(0.75, result.Top5);
        Assert.Equal([1, 1, 1, 0, 0, 1], result.PerClass.Select(c => c.Images));
        Assert.Equal([1, 0, 1, 0, 0, 0], result.PerClass.Select(c => c.Top1Correct));
        Assert.Equal("f", result.PerClass[5].Name);
        double loss = 0;
        for (int r = 0; r < 4; r++)
        {
            var row = logits.Skip(r * 6).Take(6).Select(v => (double)v).ToArray();
            loss += Math.Log(row.Sum(Math.Exp)) - row[labels[r]];
        }
        Assert.Equal(loss / 4, result.Loss, 1e-4);
    }

    [Fact]
    public async Task Evaluation_of_a_head_with_known_predictions_and_of_a_random_head_agrees_with_hand_scoring()
    {
        // Head weights 0 and biases 5, 4, …, 0: every image gets the same ranking, class 0 first, class 5 last.
        string known = fixture.Combine("known-head");
        var config = FinetuneFixture.TinyBeit with { NumClasses = 6, UseMaskToken = false };
        using (var model = (VisionTransformer)ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 1))
        {
            using (no_grad())
                foreach (var (name, parameter) in model.named_parameters())
                    if (name == "head.weight") parameter.zero_();
                    else if (name == "head.bias") parameter.copy_(tensor(new float[] { 5, 4, 3, 2, 1, 0 }));
            ModelDirectory.Save(known, new ModelSpec("beit-test", Config: config), model);
        }
        var six = DatasetSource.Open(fixture.SixClasses, DatasetLayout.ImageNet, DatasetSplit.Validation);
        Assert.Equal(6, six.Count);
        var result = await Evaluator.EvaluateAsync(known, six, new EvaluateOptions { BatchSize = 4, DecodeWorkers = 2 });
        Assert.Equal(6, result.Images);
        Assert.Equal(1 / 6.0, result.Top1, 12);
        Assert.Equal(5 / 6.0, result.Top5, 12);
        Assert.Equal([1, 0, 0, 0, 0, 0], result.PerClass.Select(c => c.Top1Correct));

        var cli = await CliHarness.RunAsync("eval", "--task", "classify", "--model", known, "--data", fixture.SixClasses, "--layout", "imagenet",
            "--workers", "2", "--out", fixture.Combine("known.json"));
        Assert.True(cli.ExitCode == 0, cli.Error);
        Assert.Contains("top-1 16.67 %", cli.Output);
        Assert.Contains("top-5 83.33 %", cli.Output);
        Assert.Equal(5 / 6.0, JsonNode.Parse(File.ReadAllText(fixture.Combine("known.json")))!["top5"]!.GetValue<double>(), 12);

        // A random 3-class head: the evaluator's figures equal an argmax over logits of the same eval batches.
        string random = fixture.Combine("random-head");
        var threeWay = FinetuneFixture.TinyBeit with { NumClasses = 3, UseMaskToken = false, GlobalPool = "avg" };
        using (var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: threeWay), seed: 8))
            ModelDirectory.Save(random, new ModelSpec("beit-test", Config: threeWay), model);
        var val = DatasetSource.Open(fixture.Data, DatasetLayout.ImageNet, DatasetSplit.Validation);
        var scored = await Evaluator.EvaluateAsync(random, val, new EvaluateOptions { BatchSize = 5, DecodeWorkers = 2 });
        var (_, network) = ModelDirectory.LoadVit(random);
        int correct = 0, total = 0;
        using (network)
        {
            network.eval();
            var loader = new DataflowLoader(val, Evaluator.RecipeFor(32), new LoaderOptions { BatchSize = 7, Shuffle = false, DecodeWorkers = 1 });
            Assert.Equal(new EvalRecipe(36, 32), Evaluator.RecipeFor(32));
            await foreach (var batch in loader.ReadEpochAsync())
                using (batch)
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    var pixels = tensor(batch.ViewFloats(0).ToArray(), [batch.Count, 3, 32, 32]);
                    long[] predicted = network.ForwardHead(network.ForwardFeatures(pixels)).argmax(1).data<long>().ToArray();
                    correct += predicted.Where((p, row) => p == batch.Labels[row]).Count();
                    total += batch.Count;
                }
        }
        Assert.Equal(val.Count, total);
        Assert.Equal((double)correct / total, scored.Top1, 12);
        Assert.Equal(1.0, scored.Top5);
    }

    [Fact]
    public async Task Fine_tuning_learns_the_classes_deterministically_and_saves_a_classifier()
    {
        var request = Request(FinetuneRequest.Classify, "classify");
        var result = await Finetuner.RunAsync(request);
        var tops = result.Evaluations.Select(e => e.Result.Top1).ToList();
        output.WriteLine($"classify val top-1 per epoch: {string.Join(", ", tops.Select(t => t.ToString("P1")))}; loss {result.FirstLoss:F4} → {result.LastLoss:F4}");
        Assert.Equal(12, tops.Count);
        Assert.True(result.Final!.Top1 > 1 / 3.0 + 0.2, $"val top-1 per epoch: {string.Join(", ", tops.Select(t => t.ToString("P1")))}");
        Assert.Equal(30, result.Final.Images);
        Assert.Equal(1.0, result.Final.Top5);
        Assert.Equal(12 * 9, result.Steps);

        var metrics = MetricsLog.Read(request.OutputDirectory).ToList();
        Assert.Equal(12 * 9, metrics.Count);
        foreach (string key in new[] { "step", "epoch", "loss", "lr", "images_per_second", "mix", "lambda" }) Assert.True(metrics[0].ContainsKey(key), key);
        Assert.Contains(metrics, m => m["mix"]!.GetValue<string>() == "cutmix");
        Assert.Contains(metrics, m => m["mix"]!.GetValue<string>() == "mixup");
        var evaluation = JsonNode.Parse(File.ReadAllText(Path.Combine(request.OutputDirectory, Finetuner.EvalFileName)))!;
        Assert.Equal(12, evaluation["epochs"]!.AsArray().Count);
        Assert.Equal(result.Final.Top1, evaluation["epochs"]![11]!["top1"]!.GetValue<double>());
        Assert.Equal(3, evaluation["per_class"]!.AsArray().Count);

        // The checkpoint's backbone/ is the classifier: evaluated from disk it scores as the last epoch did.
        string saved = Path.Combine(result.Checkpoint, "backbone");
        var spec = ModelDirectory.ReadSpec(saved);
        Assert.Equal(3, spec.Config!.NumClasses);
        Assert.Equal("avg", spec.Config.GlobalPool);
        var val = DatasetSource.Open(fixture.Data, DatasetLayout.ImageNet, DatasetSplit.Validation);
        var reloaded = await Evaluator.EvaluateAsync(saved, val, new EvaluateOptions { BatchSize = 9, DecodeWorkers = 2 });
        Assert.Equal(result.Final.Top1, reloaded.Top1);
        Assert.Equal(result.Final.Loss, reloaded.Loss, 1e-4);

        // The same seed gives the same run.
        // The same seed gives the same run (two epochs of a two-epoch schedule: the same batches, mixes and drop paths,
        // another learning rate from the second step on, so the first step's loss and every mix must agree).
        var twice = request with { OutputDirectory = fixture.Combine("classify-again"), Epochs = 2, EvaluateEachEpoch = false };
        var once = request with { OutputDirectory = fixture.Combine("classify-once"), Epochs = 2, EvaluateEachEpoch = false };
        await Finetuner.RunAsync(twice);
        await Finetuner.RunAsync(once);
        Assert.Equal(MetricsLog.Read(once.OutputDirectory).Select(m => m["loss"]!.GetValue<double>()),
            MetricsLog.Read(twice.OutputDirectory).Select(m => m["loss"]!.GetValue<double>()));
        Assert.Equal(metrics[0]["loss"]!.GetValue<double>(), MetricsLog.Read(once.OutputDirectory).First()["loss"]!.GetValue<double>());
        Assert.Equal(metrics.Take(18).Select(m => m["lambda"]!.GetValue<double>()), MetricsLog.Read(once.OutputDirectory).Select(m => m["lambda"]!.GetValue<double>()));
    }

    [Fact]
    public async Task A_linear_probe_over_the_hf_parquet_and_wds_packs_matches_the_folder_run_step_for_step()
    {
        string hf = fixture.Combine("packed-hf"), wds = fixture.Combine("packed-wds");
        await MimFlow.Data.Packing.DatasetPacker.PackAsync(new MimFlow.Data.Packing.PackRequest
        {
            From = fixture.Data, Format = MimFlow.Data.Packing.PackFormat.HfParquet, OutputDirectory = hf, ShardBytes = 40_000, RowGroupRows = 16,
        });
        await MimFlow.Data.Packing.DatasetPacker.PackAsync(new MimFlow.Data.Packing.PackRequest
        {
            From = fixture.Data, Format = MimFlow.Data.Packing.PackFormat.Wds, OutputDirectory = wds, ShardBytes = 40_000,
        });
        var folder = Request(FinetuneRequest.LinearProbe, "probe-folder") with { Epochs = 1 };
        var reference = await Finetuner.RunAsync(folder);
        var referenceLosses = MetricsLog.Read(folder.OutputDirectory).Select(m => m["loss"]!.GetValue<double>()).ToList();
        foreach (var (data, layout) in new[] { (hf, DatasetLayout.HfParquet), (wds, DatasetLayout.Wds) })
        {
            var packed = folder with { Data = data, Layout = layout, OutputDirectory = fixture.Combine("probe-" + DatasetLayouts.Name(layout)) };
            var result = await Finetuner.RunAsync(packed);
            Assert.Equal(referenceLosses, MetricsLog.Read(packed.OutputDirectory).Select(m => m["loss"]!.GetValue<double>()));
            Assert.Equal(reference.Final!.Top1, result.Final!.Top1);
            Assert.Equal(reference.Final.Images, result.Final.Images);
        }
        Assert.Throws<ArgumentException>(() => (folder with { Layout = DatasetLayout.Folder }).Validate());
        Assert.Throws<ArgumentException>(() => (folder with { Layout = DatasetLayout.Ade20k }).Validate());
    }

    [Fact]
    public async Task A_linear_probe_trains_only_the_head()
    {
        var request = Request(FinetuneRequest.LinearProbe, "probe") with { Epochs = 3, LearningRate = 1e-2, RandAugment = new() };
        var result = await Finetuner.RunAsync(request);
        Assert.Equal(3, result.Evaluations.Count);
        output.WriteLine($"linear-probe val top-1 per epoch: {string.Join(", ", result.Evaluations.Select(e => e.Result.Top1.ToString("P1")))}");
        Assert.True(double.IsFinite(result.LastLoss));
        Assert.DoesNotContain("mix", MetricsLog.Read(request.OutputDirectory).First().Select(p => p.Key));

        using var before = SafetensorsFile.Open(Path.Combine(fixture.Backbone, ModelDirectory.WeightsFileName));
        using var after = SafetensorsFile.Open(Path.Combine(result.Checkpoint, "backbone", ModelDirectory.WeightsFileName));
        var names = after.Entries.Select(e => e.Name).ToList();
        Assert.Contains("head.weight", names);
        foreach (string name in names.Where(n => !n.StartsWith("head.", StringComparison.Ordinal)))
            Assert.True(before.ReadFloat32(name).SequenceEqual(after.ReadFloat32(name)), $"{name} changed");
        // The head did train: it differs from the head the probe started from.
        var (_, initial) = Finetuner.BuildClassifier(request, 3);
        using (initial)
        {
            float[] start = Values(initial.named_parameters().Single(p => p.name == "head.weight").parameter);
            Assert.False(start.SequenceEqual(after.ReadFloat32("head.weight")));
        }
    }

    /// <summary>
    /// Runs <paramref name="request"/> whole, then again into another folder stopped (cancelled) once
    /// <paramref name="stopAt"/> says so, then resumes that; asserts the two runs logged the same steps with bit-equal
    /// losses and end in the same evaluations, eval.json and weights. Returns both results and the steps the stopped run had logged.
    /// </summary>
    private async Task<(SupervisedResult<EvaluationResult> Whole, SupervisedResult<EvaluationResult> Resumed, int LoggedWhenStopped)> StopAndResume(FinetuneRequest request, string stopped, Func<SupervisedProgress<EvaluationResult>, bool> stopAt,
        long expectedCheckpointStep)
    {
        var whole = await Finetuner.RunAsync(request);
        var interrupted = request with { OutputDirectory = fixture.Combine(stopped) };
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<SupervisedProgress<EvaluationResult>>(p => { if (stopAt(p)) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Finetuner.RunAsync(interrupted, progress, stop.Token));
        }
        Assert.EndsWith($"step-{expectedCheckpointStep:D8}", new CheckpointStore(interrupted.OutputDirectory).Latest());
        int logged = MetricsLog.Read(interrupted.OutputDirectory).Count();
        var resumed = await Finetuner.RunAsync(interrupted with { Resume = true });

        Assert.Equal(Enumerable.Range(0, (int)whole.Steps).Select(i => (long)i), RunAssertions.Steps(interrupted.OutputDirectory));
        Assert.Equal(RunAssertions.Losses(request.OutputDirectory), RunAssertions.Losses(interrupted.OutputDirectory));
        Assert.Equal((whole.Steps, whole.FirstLoss, whole.LastLoss), (resumed.Steps, resumed.FirstLoss, resumed.LastLoss));
        Assert.Equal(whole.Evaluations.Select(e => (e.Epoch, e.Step, e.Result.Top1, e.Result.Top5, e.Result.Loss)),
            resumed.Evaluations.Select(e => (e.Epoch, e.Step, e.Result.Top1, e.Result.Top5, e.Result.Loss)));
        Assert.Equal(File.ReadAllText(Path.Combine(request.OutputDirectory, Finetuner.EvalFileName)),
            File.ReadAllText(Path.Combine(interrupted.OutputDirectory, Finetuner.EvalFileName)));
        RunAssertions.SameTrainingState(whole.Checkpoint, resumed.Checkpoint);
        return (whole, resumed, logged);
    }

    [Fact]
    public async Task A_fine_tuning_run_stopped_mid_epoch_resumes_with_every_loss_and_the_final_top1_of_the_uninterrupted_run()
    {
        // RandAugment, random erasing, Mixup/CutMix and drop path all on: every random draw must replay after the resume.
        var request = Request(FinetuneRequest.Classify, "resume-whole") with { Epochs = 3, RandAugment = new(), RandomErasing = 0.25 };
        // Step 12 lies in the second epoch (9 steps each): the steps logged after the epoch-1 checkpoint must be dropped.
        var (whole, resumed, logged) = await StopAndResume(request, "resume-stopped", p => p.Step == 12, expectedCheckpointStep: 9);
        Assert.Equal(27, whole.Steps);
        Assert.True(logged >= 13, $"{logged} steps logged when stopped");
        Assert.Equal(whole.Final!.Top1, resumed.Final!.Top1);
        Assert.Contains(MetricsLog.Read(request.OutputDirectory), m => m["mix"]!.GetValue<string>() != "none");

        // Without --resume the stopped-then-finished folder is refused; resumed once more, it is complete and left as it is.
        string run = fixture.Combine("resume-stopped");
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => Finetuner.RunAsync(request with { OutputDirectory = run }));
        Assert.Contains("holds a finished run", refused.Message);
        string metrics = File.ReadAllText(Path.Combine(run, MetricsLog.FileName)), evaluation = File.ReadAllText(Path.Combine(run, Finetuner.EvalFileName));
        var again = await Finetuner.RunAsync(request with { OutputDirectory = run, Resume = true });
        Assert.True(again.WasComplete);
        Assert.Equal(resumed.Checkpoint, again.Checkpoint);
        Assert.Equal((resumed.Steps, resumed.LastLoss, resumed.Final.Top1), (again.Steps, again.LastLoss, again.Final!.Top1));
        Assert.Equal(3, again.Evaluations.Count);
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(run, MetricsLog.FileName)));
        Assert.Equal(evaluation, File.ReadAllText(Path.Combine(run, Finetuner.EvalFileName)));
    }

    [Fact]
    public async Task A_linear_probe_stopped_after_an_epoch_resumes_exactly_and_resume_without_a_checkpoint_names_the_folder()
    {
        var request = Request(FinetuneRequest.LinearProbe, "probe-resume-whole") with { Epochs = 2, LearningRate = 1e-2 };
        var (_, resumed, _) = await StopAndResume(request, "probe-resume-stopped", p => p.Evaluation is not null && p.Epoch == 0, expectedCheckpointStep: 9);
        Assert.Equal(2, resumed.Evaluations.Count);

        // An unfinished run without --resume is pointed at it; --resume where no run was saved names the folder.
        string unfinished = fixture.Combine("probe-unfinished");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<SupervisedProgress<EvaluationResult>>(p => { if (p.Evaluation is not null) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Finetuner.RunAsync(request with { OutputDirectory = unfinished }, progress, stop.Token));
        }
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => Finetuner.RunAsync(request with { OutputDirectory = unfinished }));
        Assert.Contains("pass --resume", refused.Message);
        var otherSeed = await Assert.ThrowsAsync<ArgumentException>(() => Finetuner.RunAsync(request with { OutputDirectory = unfinished, Resume = true, Seed = 2 }));
        Assert.Contains("--seed", otherSeed.Message);
        string empty = fixture.Combine("probe-nothing-saved");
        var missing = await Assert.ThrowsAsync<ArgumentException>(() => Finetuner.RunAsync(request with { OutputDirectory = empty, Resume = true }));
        Assert.Contains(empty, missing.Message);
        Assert.Contains("no checkpoint", missing.Message);
    }

    [Fact]
    public async Task The_cli_resume_flag_continues_a_stopped_run_exactly_and_reports_a_finished_one()
    {
        // The request the command line below builds (its defaults spelled out), run whole and stopped after epoch 0.
        FinetuneRequest CliRequest(string run) => new()
        {
            Task = FinetuneRequest.Classify, Model = fixture.Backbone, Data = fixture.SixClasses, OutputDirectory = fixture.Combine(run), Epochs = 2,
            BatchSize = 2, LearningRate = 1e-3, Seed = 3, DecodeWorkers = 2, Mixup = false, RandAugment = null, RandomErasing = 0.25, Device = CPU,
        };
        await Finetuner.RunAsync(CliRequest("cli-resume-whole"));
        string run = fixture.Combine("cli-resume");
        using (var stop = new CancellationTokenSource())
        {
            var progress = new MimFlow.Core.Status.ImmediateProgress<SupervisedProgress<EvaluationResult>>(p => { if (p.Evaluation is not null) stop.Cancel(); });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Finetuner.RunAsync(CliRequest("cli-resume"), progress, stop.Token));
        }
        string[] arguments = ["finetune", "--task", "classify", "--model", fixture.Backbone, "--data", fixture.SixClasses, "--layout", "imagenet", "--out", run,
            "--epochs", "2", "--batch", "2", "--lr", "1e-3", "--seed", "3", "--workers", "2", "--no-mixup", "--no-randaugment", "--resume"];
        var resumed = await CliHarness.RunAsync(arguments);
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains("val top-1", resumed.Output);
        Assert.Equal(RunAssertions.Losses(fixture.Combine("cli-resume-whole")), RunAssertions.Losses(run));

        var complete = await CliHarness.RunAsync(arguments);
        Assert.True(complete.ExitCode == 0, complete.Error);
        Assert.Contains("is complete", complete.Output);

        string empty = fixture.Combine("cli-resume-empty");
        var missing = await CliHarness.RunAsync([.. arguments.Select(a => a == run ? empty : a)]);
        Assert.Equal(1, missing.ExitCode);
        Assert.StartsWith($"mimflow: error: {empty}: no checkpoint", missing.Error);
    }

    [Fact]
    public async Task The_cli_fine_tunes_and_evaluates_end_to_end_and_reports_errors_in_one_line()
    {
        string run = fixture.Combine("cli");
        var tune = await CliHarness.RunAsync("finetune", "--task", "classify", "--model", fixture.Backbone, "--data", fixture.Data, "--layout", "imagenet",
            "--out", run, "--epochs", "1", "--batch", "6", "--lr", "1e-3", "--seed", "3", "--workers", "2", "--no-mixup", "--no-randaugment", "--reprob", "0.5");
        Assert.True(tune.ExitCode == 0, tune.Error);
        Assert.Contains("val top-1", tune.Output);
        Assert.DoesNotContain(MetricsLog.Read(run), m => m["mix"]!.GetValue<string>() != "none");
        string backbone = Path.Combine(new CheckpointStore(run).Latest()!, "backbone");

        var eval = await CliHarness.RunAsync("eval", "--task", "classify", "--model", backbone, "--data", fixture.Data, "--layout", "imagenet", "--workers", "2");
        Assert.True(eval.ExitCode == 0, eval.Error);
        Assert.Contains("top-5 100.00 %", eval.Output);

        var again = await CliHarness.RunAsync("finetune", "--task", "classify", "--model", fixture.Backbone, "--data", fixture.Data, "--layout", "imagenet",
            "--out", run, "--epochs", "1", "--batch", "6");
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("holds a finished run", again.Error);
        var missing = await CliHarness.RunAsync("finetune", "--task", "linear-probe", "--model", fixture.Combine("no", "such"), "--data", fixture.Data,
            "--layout", "imagenet", "--out", fixture.Combine("cli-missing"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Single(missing.Error.Trim().Split('\n'));
        Assert.StartsWith("mimflow: error:", missing.Error);
        var noHead = await CliHarness.RunAsync("eval", "--task", "classify", "--model", fixture.Backbone, "--data", fixture.Data, "--layout", "imagenet");
        Assert.Equal(1, noHead.ExitCode);
        Assert.Contains("no classification head", noHead.Error);
    }
}
