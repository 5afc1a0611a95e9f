using MimFlow.Models.Backbones;
using MimFlow.Torch.Backend;
using MimFlow.Training.Objectives;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

public sealed class ObjectiveTests
{
    private const int Codes = 64;

    /// <summary>BEiT's pretraining shape (relative position bias per block, LayerScale, average pooling: no final norm).</summary>
    private static readonly VitConfig BeitTiny = new()
    {
        ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 4, NumHeads = 2, BeitAttention = true, UseAbsPosEmb = false,
        UseRelPosBias = true, InitValues = 0.1, GlobalPool = "avg", UseMaskToken = true,
    };

    /// <summary>BEiT v2's pretraining shape: shared relative position bias and a final norm ("token" pooling).</summary>
    private static readonly VitConfig SharedBiasTiny = BeitTiny with { UseRelPosBias = false, UseSharedRelPosBias = true, GlobalPool = "token" };

    /// <summary>iBOT's plain ViT: absolute positions (so local crops of another size run), final norm.</summary>
    private static readonly VitConfig VitTiny = new() { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, UseMaskToken = true };

    private static readonly IbotOptions TinyIbot = new() { OutDim = Codes, HeadHidden = 48, HeadBottleneck = 16 };

    public ObjectiveTests() => TorchBackend.EnsureLoaded();

    [Fact]
    public void Beit_loss_is_the_cross_entropy_of_masked_final_states_against_their_codes()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(11);
        using var objective = new BeitObjective(new VisionTransformer(BeitTiny), Codes);
        objective.Initialize(5);
        objective.eval();
        var (pixels, mask, codes) = Batch(2, BeitTiny);
        using var loss = objective.Loss(pixels, mask, codes);

        var features = objective.Backbone.ForwardFeatures(pixels, mask);
        var (tokens, labels) = GatherByHand(features, mask, codes);
        double expected = CrossEntropyByHand(objective.Head.forward(stack(tokens)), labels);
        Assert.Equal(expected, loss.Total.item<float>(), 2e-5);
        Assert.Equal(new[] { "mim" }, loss.Terms.Select(t => t.Name));
        Assert.Equal(expected, loss.ToMetrics()["loss_mim"], 2e-5);
        Assert.InRange(loss.ToMetrics()["mim_acc"], 0, 1);

        // The mask may arrive as 0/1 bytes (shards, .npy) rather than bool.
        using var fromBytes = objective.Loss(pixels, mask.to(ScalarType.Byte), codes.to(ScalarType.Int16));
        Assert.Equal(loss.Total.item<float>(), fromBytes.Total.item<float>());
        Assert.Throws<ArgumentException>(() => objective.Loss(pixels, zeros(2, 16, dtype: ScalarType.Bool), codes));
    }

    [Fact]
    public void Codes_at_unmasked_positions_do_not_influence_either_mim_loss()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(12);
        using var beit = new BeitObjective(new VisionTransformer(BeitTiny), Codes);
        using var beitV2 = new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new BeitV2Options { CodebookSize = Codes });
        beit.Initialize(1);
        beitV2.Initialize(2);
        beit.eval();
        beitV2.eval();
        var (pixels, mask, codes) = Batch(2, BeitTiny);
        var otherCodes = where(mask, codes, (codes + 17) % Codes);
        Assert.False(Same(codes, otherCodes));
        Assert.Equal(beit.Loss(pixels, mask, codes).Total.item<float>(), beit.Loss(pixels, mask, otherCodes).Total.item<float>());
        Assert.Equal(beitV2.Loss(pixels, mask, codes).Total.item<float>(), beitV2.Loss(pixels, mask, otherCodes).Total.item<float>());
        // A masked code does change it.
        var changedMasked = codes.clone();
        var (b, n) = FirstMasked(mask);
        changedMasked[b, n] = (codes[b, n] + 1) % Codes;
        Assert.NotEqual(beit.Loss(pixels, mask, codes).Total.item<float>(), beit.Loss(pixels, mask, changedMasked).Total.item<float>());
    }

    [Fact]
    public void Beit_v2_adds_patch_aggregation_of_last_cls_and_early_patches_through_the_shared_norm_and_head()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(13);
        using var objective = new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new BeitV2Options { CodebookSize = Codes, EarlyLayer = 2 });
        objective.Initialize(7);
        objective.eval();
        Assert.Equal(2, objective.EarlyLayer);
        Assert.Equal(3, new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new() { CodebookSize = Codes }).EarlyLayer);
        Assert.Throws<ArgumentException>(() => new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new() { EarlyLayer = 5 }));
        Assert.False(objective.Aggregation.HasOwnNorm);
        Assert.DoesNotContain(objective.state_dict().Keys, key => key.Contains("cls_pt_norm", StringComparison.Ordinal));

        var (pixels, mask, codes) = Batch(2, SharedBiasTiny);
        using var loss = objective.Loss(pixels, mask, codes);

        // By hand: block 2 (1-based) is hidden state 1; the last block's state before the final norm gives [CLS].
        var backbone = objective.Backbone;
        var (features, hidden) = backbone.ForwardLayers(pixels, mask, [1, 3]);
        var (finalTokens, labels) = GatherByHand(features, mask, codes);
        double mim = CrossEntropyByHand(objective.Head.forward(stack(finalTokens)), labels);
        var joined = cat([hidden[3][.., ..1], hidden[1][.., 1..]], 1);
        var aggregated = backbone.FinalNorm(objective.Aggregation.forward(joined, joined, backbone.SharedBias()));
        var (aggregatedTokens, _) = GatherByHand(aggregated, mask, codes);
        double aggregation = CrossEntropyByHand(objective.Head.forward(stack(aggregatedTokens)), labels);

        Assert.Equal(mim, Term(loss, "mim"), 2e-5);
        Assert.Equal(aggregation, Term(loss, "aggregation"), 2e-5);
        Assert.Equal(mim + aggregation, loss.Total.item<float>(), 2e-5);
        Assert.NotEqual(mim, aggregation, 3);
    }

    [Fact]
    public void Both_beit_v2_terms_train_the_backbone_and_the_shared_head()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(14);
        using var objective = new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new BeitV2Options { CodebookSize = Codes, EarlyLayer = 2 });
        objective.Initialize(8);
        objective.eval();
        var (pixels, mask, codes) = Batch(2, SharedBiasTiny);
        foreach (string term in new[] { "mim", "aggregation" })
        {
            objective.zero_grad();
            using var loss = objective.Loss(pixels, mask, codes);
            loss.Terms.Single(t => t.Name == term).Value.backward();
            var gradients = objective.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad is { } g ? g.abs().sum().item<float>() : 0f);
            Assert.True(gradients["head.lm_head.weight"] > 0, $"{term}: no gradient in the shared head");
            Assert.True(gradients["backbone.blocks.0.attn.qkv.weight"] > 0, $"{term}: no gradient in the first block");
            Assert.True(gradients["backbone.rel_pos_bias.relative_position_bias_table"] > 0, $"{term}: no gradient in the shared bias");
            Assert.True(gradients["backbone.norm.weight"] > 0, $"{term}: no gradient in the final norm both branches share");
            Assert.True(gradients["backbone.blocks.3.mlp.fc2.weight"] > 0, $"{term}: no gradient in the last block ([CLS] comes from it)");
            float aggregationGradient = gradients["aggregation.cls_pt_layers.0.attn.qkv.weight"];
            if (term == "mim") Assert.Equal(0f, aggregationGradient);
            else Assert.True(aggregationGradient > 0);
        }
    }

    [Fact]
    public void Mask_distill_is_smooth_l1_with_beta_2_against_per_token_normalised_teacher_features()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(15);
        const int teacherDim = 24;
        using var objective = new MaskDistillObjective(new VisionTransformer(BeitTiny), teacherDim);
        objective.Initialize(9);
        objective.eval();
        Assert.Equal(2.0, objective.Options.Beta);
        var (pixels, mask, _) = Batch(2, BeitTiny);
        var teacher = randn(2, 16, teacherDim) * 3 + 1;
        using var loss = objective.Loss(pixels, mask, teacher);

        var features = objective.Backbone.ForwardFeatures(pixels, mask);
        var predictions = new List<Tensor>();
        var targets = new List<double[]>();
        var maskValues = mask.data<bool>().ToArray();
        for (int b = 0; b < 2; b++)
        {
            for (int n = 0; n < 16; n++)
            {
                if (!maskValues[b * 16 + n]) continue;
                predictions.Add(features[b, 1 + n]);
                var raw = teacher[b, n].to(ScalarType.Float64).data<double>().ToArray();
                double mean = raw.Average(), variance = raw.Select(x => (x - mean) * (x - mean)).Average();
                targets.Add(raw.Select(x => (x - mean) / Math.Sqrt(variance + 1e-6)).ToArray());
            }
        }
        var predicted = objective.Head.forward(stack(predictions)).to(ScalarType.Float64).data<double>().ToArray();
        double sum = 0;
        for (int m = 0; m < targets.Count; m++)
        {
            for (int d = 0; d < teacherDim; d++)
            {
                double difference = Math.Abs(predicted[m * teacherDim + d] - targets[m][d]);
                sum += difference < 2 ? 0.5 * difference * difference / 2 : difference - 1;
            }
        }
        Assert.Equal(sum / (targets.Count * teacherDim), loss.Total.item<float>(), 2e-5);
        Assert.Equal(new[] { "distill" }, loss.Terms.Select(t => t.Name));
    }

    [Fact]
    public void Mask_distill_target_is_normalised_per_token_without_affine_and_read_at_masked_positions_only()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(16);
        using var objective = new MaskDistillObjective(new VisionTransformer(BeitTiny), 24);
        objective.Initialize(10);
        objective.eval();
        var (pixels, mask, _) = Batch(2, BeitTiny);
        var teacher = randn(2, 16, 24);
        float baseline = objective.Loss(pixels, mask, teacher).Total.item<float>();

        // Each token's own offset and positive scale vanish in the target.
        var perTokenScale = rand(2, 16, 1) * 4 + 0.5;
        var perTokenOffset = randn(2, 16, 1) * 10;
        Assert.Equal(baseline, objective.Loss(pixels, mask, teacher * perTokenScale + perTokenOffset).Total.item<float>(), 2e-4);
        var normalised = objective.NormalizeTargets(teacher);
        Assert.True(allclose(normalised.mean([-1]), zeros(2, 16), 0, 1e-5));
        Assert.True(allclose(normalised.var([-1], unbiased: false), ones(2, 16), 0, 1e-4));
        // No learnable target: the head is the only addition to the backbone.
        Assert.All(objective.named_parameters().Select(p => p.name), name => Assert.True(name.StartsWith("backbone.", StringComparison.Ordinal) || name.StartsWith("head.", StringComparison.Ordinal), name));

        var unmaskedChanged = where(mask.unsqueeze(-1), teacher, randn(2, 16, 24));
        Assert.Equal(baseline, objective.Loss(pixels, mask, unmaskedChanged).Total.item<float>());
    }

    [Fact]
    public void Ibot_loss_is_cross_view_cls_and_same_view_masked_patch_distillation_with_centering()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(17);
        using var objective = new IbotObjective(new VisionTransformer(VitTiny), TinyIbot);
        objective.Initialize(11);
        objective.train();
        const int batch = 3;
        var globals = new[] { randn(batch, 3, 32, 32), randn(batch, 3, 32, 32) };
        var masks = new[] { rand(batch, 16) < 0.4, rand(batch, 16) < 0.4 };
        masks[1][1] = zeros(16, dtype: ScalarType.Bool); // an image with nothing masked counts as 0 (iBOT's clamp)
        masks[0][0, 0] = true;
        var locals = new[] { randn(batch, 3, 16, 16), randn(batch, 3, 16, 16) };
        var temperatures = new TeacherTemperatures(0.05, 0.06);

        // A first step moves both centers off zero, so the hand computation below exercises centering.
        objective.Loss(globals, masks, locals, temperatures).Dispose();
        Assert.True(objective.ClsCenter.abs().sum().item<float>() > 0);
        var clsCenter = objective.ClsCenter.clone();
        var patchCenter = objective.PatchCenter.clone();

        Tensor teacherOut, studentOut, localOut;
        using (no_grad())
        {
            teacherOut = objective.TeacherHead.forward(objective.TeacherBackbone.ForwardFeatures(cat(globals, 0)));
            studentOut = objective.Head.forward(objective.Backbone.ForwardFeatures(cat(globals, 0), cat(masks, 0)));
            localOut = objective.Head.forward(objective.Backbone.ForwardFeatures(cat(locals, 0)))[.., 0];
        }
        using var loss = objective.Loss(globals, masks, locals, temperatures);

        int tokens = 17;
        var teacher = Values(teacherOut);
        var student = Values(studentOut);
        var local = Values(localOut);
        var cCenter = Values(clsCenter);
        var pCenter = Values(patchCenter);
        var maskValues = cat(masks, 0).data<bool>().ToArray();
        double[] TeacherToken(int view, int b, int t, double[] center, double temperature) =>
            Softmax(Enumerable.Range(0, Codes).Select(k => (teacher[((view * batch + b) * tokens + t) * Codes + k] - center[k]) / temperature).ToArray());
        double[] StudentCls(int view, int b) => LogSoftmax(Enumerable.Range(0, Codes).Select(k => (view < 2
            ? student[((view * batch + b) * tokens) * Codes + k]
            : local[((view - 2) * batch + b) * Codes + k]) / 0.1).ToArray());
        double[] StudentPatch(int view, int b, int n) =>
            LogSoftmax(Enumerable.Range(0, Codes).Select(k => student[((view * batch + b) * tokens + 1 + n) * Codes + k] / 0.1).ToArray());
        static double Cross(double[] p, double[] logQ) => -p.Zip(logQ, (a, b) => a * b).Sum();

        double clsSum = 0, patchSum = 0;
        int clsPairs = 0;
        for (int q = 0; q < 2; q++)
        {
            for (int v = 0; v < 4; v++)
            {
                if (v == q) continue;
                clsSum += Enumerable.Range(0, batch).Average(b => Cross(TeacherToken(q, b, 0, cCenter, 0.05), StudentCls(v, b)));
                clsPairs++;
            }
            patchSum += Enumerable.Range(0, batch).Average(b =>
            {
                var masked = Enumerable.Range(0, 16).Where(n => maskValues[(q * batch + b) * 16 + n]).ToList();
                double total = masked.Sum(n => Cross(TeacherToken(q, b, 1 + n, pCenter, 0.06), StudentPatch(q, b, n)));
                return total / Math.Max(1, masked.Count);
            });
        }
        Assert.Equal(6, clsPairs);
        Assert.Equal(clsSum / clsPairs, Term(loss, "cls"), 2e-4);
        Assert.Equal(patchSum / 2, Term(loss, "patch"), 2e-4);
        Assert.Equal(Term(loss, "cls") + Term(loss, "patch"), loss.Total.item<float>(), 2e-5);

        // The centers moved by exactly one EMA step of the teacher's raw outputs over all 2B global images.
        var teacherCls = teacherOut[.., 0];
        var expectedCls = clsCenter * 0.9 + teacherCls.sum(0, keepdim: true) / (2 * batch) * (1 - 0.9);
        var expectedPatch = patchCenter * 0.9 + (teacherOut[.., 1..].mean([1]).sum(0, keepdim: true) / (2 * batch)).unsqueeze(0) * (1 - 0.9);
        Assert.True(allclose(objective.ClsCenter, expectedCls, 1e-6, 1e-7));
        Assert.True(allclose(objective.PatchCenter, expectedPatch, 1e-6, 1e-7));

        // Evaluation leaves the centers alone.
        objective.eval();
        var before = objective.ClsCenter.clone();
        objective.Loss(globals, masks, locals, temperatures).Dispose();
        Assert.True(Same(before, objective.ClsCenter));
    }

    [Fact]
    public void Ibot_teacher_takes_no_gradients_and_follows_the_student_by_exact_ema()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(18);
        using var objective = new IbotObjective(new VisionTransformer(VitTiny), TinyIbot);
        objective.Initialize(12);
        objective.train();
        var teacherNames = objective.named_parameters().Where(p => p.name.StartsWith("teacher.", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(teacherNames);
        Assert.All(teacherNames, p => Assert.False(p.parameter.requires_grad, p.name));
        var trainable = objective.TrainableParameters();
        Assert.DoesNotContain(trainable, p => teacherNames.Any(t => ReferenceEquals(t.parameter, p)));
        // Right after initialisation the teacher is the student.
        var studentByName = objective.named_parameters().Where(p => !p.name.StartsWith("teacher.", StringComparison.Ordinal)).ToDictionary(p => p.name, p => p.parameter);
        Assert.All(teacherNames, p => Assert.True(Same(p.parameter, studentByName[p.name["teacher.".Length..]]), p.name));

        var globals = new[] { randn(2, 3, 32, 32), randn(2, 3, 32, 32) };
        var masks = new[] { rand(2, 16) < 0.5, rand(2, 16) < 0.5 };
        using var optimizer = optim.AdamW(trainable, lr: 1e-2);
        using (var loss = objective.Loss(globals, masks, null, new TeacherTemperatures(0.04, 0.04)))
        {
            optimizer.zero_grad();
            loss.Total.backward();
        }
        Assert.All(teacherNames, p => Assert.Null(p.parameter.grad));
        Assert.True(studentByName["backbone.blocks.0.attn.qkv.weight"].grad!.abs().sum().item<float>() > 0);
        Assert.True(studentByName["head.last_layer.weight_v"].grad!.abs().sum().item<float>() > 0);
        optimizer.step();

        var oldTeacher = teacherNames.ToDictionary(p => p.name, p => p.parameter.detach().clone());
        const double momentum = 0.9;
        objective.UpdateTeacher(momentum);
        foreach (var (name, parameter) in teacherNames)
        {
            var student = studentByName[name["teacher.".Length..]];
            var expected = oldTeacher[name] * momentum + student.detach() * (1 - momentum);
            Assert.True(allclose(parameter, expected, 1e-6, 1e-8), name);
        }
        Assert.False(Same(studentByName["backbone.blocks.0.attn.qkv.weight"], teacherNames.Single(p => p.name == "teacher.backbone.blocks.0.attn.qkv.weight").parameter));
    }

    [Fact]
    public void Local_crops_of_another_size_read_dino_interpolated_position_embeddings()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(20);
        using var model = new VisionTransformer(VitTiny);
        Initialization.Apply(model, 13);
        model.eval();
        // The same weights at 16 px, with the 4×4 position grid resized to 2×2 by hand: PyTorch's bicubic (A = −0.75,
        // edge-clamped taps) at DINO's scale factor (2 + 0.1) / 4, source x = (x' + 0.5) / scale − 0.5.
        using var small = new VisionTransformer(VitTiny with { ImgSize = 16 });
        var weights = model.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
        var grid = Values(weights["pos_embed"]);
        const int dim = 32, source = 4, target = 2;
        double scale = (target + 0.1) / source;
        var resized = new double[(1 + target * target) * dim];
        Array.Copy(grid, resized, dim);
        for (int y = 0; y < target; y++)
        {
            for (int x = 0; x < target; x++)
            {
                var (rows, rowWeights) = CubicTaps((y + 0.5) / scale - 0.5, source);
                var (columns, columnWeights) = CubicTaps((x + 0.5) / scale - 0.5, source);
                for (int c = 0; c < dim; c++)
                {
                    double value = 0;
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++)
                            value += rowWeights[i] * columnWeights[j] * grid[(1 + rows[i] * source + columns[j]) * dim + c];
                    resized[(1 + y * target + x) * dim + c] = value;
                }
            }
        }
        weights["pos_embed"] = tensor(resized, [1, 1 + target * target, dim]).to(ScalarType.Float32);
        small.load_state_dict(weights);
        small.eval();
        using var noGrad = no_grad();
        var crops = randn(2, 3, 16, 16);
        Assert.True(allclose(model.ForwardFeatures(crops), small.ForwardFeatures(crops), 1e-4, 1e-5));
        using var relative = new VisionTransformer(BeitTiny);
        Assert.Throws<ArgumentException>(() => relative.ForwardFeatures(crops));
    }

    private static (int[] Indices, double[] Weights) CubicTaps(double position, int size)
    {
        const double a = -0.75;
        int floor = (int)Math.Floor(position);
        double t = position - floor;
        double Near(double d) => ((a + 2) * d - (a + 3)) * d * d + 1;
        double Far(double d) => ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
        var weights = new[] { Far(t + 1), Near(t), Near(1 - t), Far(2 - t) };
        var indices = Enumerable.Range(-1, 4).Select(k => Math.Clamp(floor + k, 0, size - 1)).ToArray();
        return (indices, weights);
    }

    [Fact]
    public void Teacher_temperature_warms_up_along_numpy_linspace()
    {
        var schedule = TeacherTemperatureSchedule.Ibot;
        Assert.Equal(0.04, schedule.At(0), 12);
        Assert.Equal(0.04 + 0.03 * 10 / 29, schedule.At(10), 12);
        Assert.Equal(0.07, schedule.At(29), 12);
        Assert.Equal(0.07, schedule.At(500), 12);
        var delayed = new TeacherTemperatureSchedule(0.04, 0.07, 30, StartEpoch: 50);
        Assert.Equal(0.04, delayed.At(49), 12);
        Assert.Equal(0.04, delayed.At(50), 12);
        Assert.Equal(0.07, delayed.At(79), 12);
        Assert.Equal(new TeacherTemperatures(0.07, 0.07), TeacherTemperatures.Ibot(30));
    }

    [Fact]
    public void Each_objective_learns_a_fixed_batch_with_adamw()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(19);
        var (pixels, mask, codes) = Batch(2, BeitTiny);
        var teacherFeatures = randn(2, 16, 24);
        var globals = new[] { randn(2, 3, 32, 32), randn(2, 3, 32, 32) };
        var masks = new[] { rand(2, 16) < 0.5, rand(2, 16) < 0.5 };
        var locals = new[] { randn(2, 3, 16, 16) };

        using var beit = new BeitObjective(new VisionTransformer(BeitTiny), Codes);
        AssertLearns(beit, () => beit.Loss(pixels, mask, codes));
        using var beitV2 = new BeitV2Objective(new VisionTransformer(SharedBiasTiny), new BeitV2Options { CodebookSize = Codes });
        AssertLearns(beitV2, () => beitV2.Loss(pixels, mask, codes));
        using var maskDistill = new MaskDistillObjective(new VisionTransformer(BeitTiny), 24);
        AssertLearns(maskDistill, () => maskDistill.Loss(pixels, mask, teacherFeatures));
        using var ibot = new IbotObjective(new VisionTransformer(VitTiny), TinyIbot);
        AssertLearns(ibot, () => ibot.Loss(globals, masks, locals, new TeacherTemperatures(0.04, 0.04)), () => ibot.UpdateTeacher(0.996));
    }

    private static void AssertLearns(IMimObjective objective, Func<ObjectiveLoss> step, Action? afterStep = null)
    {
        objective.Initialize(21);
        ((nn.Module)objective).train();
        using var optimizer = optim.AdamW(objective.TrainableParameters(), lr: 2e-3);
        var history = new List<IReadOnlyDictionary<string, double>>();
        for (int i = 0; i < 8; i++)
        {
            using var scope = NewDisposeScope();
            using var loss = step();
            history.Add(loss.ToMetrics());
            optimizer.zero_grad();
            loss.Total.backward();
            optimizer.step();
            afterStep?.Invoke();
        }
        foreach (string name in history[0].Keys.Where(k => !k.EndsWith("acc", StringComparison.Ordinal)))
            Assert.True(history[^1][name] < history[0][name], $"{objective.Name} {name}: {history[0][name]} → {history[^1][name]}");
    }

    private static (Tensor Pixels, Tensor Mask, Tensor Codes) Batch(int batch, VitConfig config)
    {
        var pixels = randn(batch, 3, config.ImgSize, config.ImgSize);
        var mask = rand(batch, config.NumPatches) < 0.45;
        mask[0, 0] = true;
        mask[0, 1] = false;
        var codes = randint(0, Codes, [batch, config.NumPatches]);
        return (pixels, mask, codes);
    }

    /// <summary>Patch tokens (skipping [CLS]) and codes where the mask is set, by explicit loops in row-major order.</summary>
    private static (List<Tensor> Tokens, List<long> Labels) GatherByHand(Tensor states, Tensor mask, Tensor codes)
    {
        var tokens = new List<Tensor>();
        var labels = new List<long>();
        long batch = mask.shape[0], patches = mask.shape[1];
        var maskValues = mask.data<bool>().ToArray();
        var codeValues = codes.data<long>().ToArray();
        for (int b = 0; b < batch; b++)
        {
            for (int n = 0; n < patches; n++)
            {
                if (!maskValues[b * patches + n]) continue;
                tokens.Add(states[b, 1 + n]);
                labels.Add(codeValues[b * patches + n]);
            }
        }
        return (tokens, labels);
    }

    private static double CrossEntropyByHand(Tensor logits, List<long> labels)
    {
        var values = Values(logits);
        int classes = (int)logits.shape[1];
        double total = 0;
        for (int m = 0; m < labels.Count; m++)
        {
            var row = values.AsSpan(m * classes, classes).ToArray();
            total -= LogSoftmax(row)[labels[m]];
        }
        return total / labels.Count;
    }

    private static double[] Values(Tensor tensor) => tensor.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray();

    private static double[] LogSoftmax(double[] row)
    {
        double max = row.Max();
        double logSum = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
        return row.Select(x => x - logSum).ToArray();
    }

    private static double[] Softmax(double[] row) => LogSoftmax(row).Select(Math.Exp).ToArray();

    private static double Term(ObjectiveLoss loss, string name) => loss.Terms.Single(t => t.Name == name).Value.item<float>();

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static (long Batch, long Patch) FirstMasked(Tensor mask)
    {
        var values = mask.data<bool>().ToArray();
        int index = Array.IndexOf(values, true);
        return (index / mask.shape[1], index % mask.shape[1]);
    }
}
