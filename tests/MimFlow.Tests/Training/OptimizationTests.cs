using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using MimFlow.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

public sealed class OptimizationTests
{
    /// <summary>A BEiT-style tiny ViT: q/v biases, LayerScale gammas, per-block relative position tables, a head.</summary>
    private static readonly VitConfig Tiny = new()
    {
        ImgSize = 16, PatchSize = 8, EmbedDim = 16, Depth = 2, NumHeads = 2, NumClasses = 3,
        BeitAttention = true, UseRelPosBias = true, InitValues = 0.1,
    };

    private readonly ITestOutputHelper output;

    public OptimizationTests(ITestOutputHelper output)
    {
        TorchBackend.EnsureLoaded();
        this.output = output;
    }

    [Theory]
    [InlineData(null, 0.0)]
    [InlineData(0.75, 0.0)]
    [InlineData(0.75, 0.5)]
    public void Flat_adamw_matches_torch_adamw_with_the_same_groups(double? layerDecay, double clip)
    {
        using var scope = NewDisposeScope();
        using var flatModel = NewModel(Tiny, seed: 1);
        using var torchModel = NewModel(Tiny, seed: 2);
        CopyParameters(flatModel, torchModel);
        var initial = torchModel.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var groupOptions = new ParameterGroupOptions { LayerDecay = layerDecay };
        var options = new AdamWOptions { Beta2 = 0.98, WeightDecay = 0.05 };
        using var flat = new FlatAdamW(ParameterGroups.Build(flatModel, groupOptions), options);
        var torchGroups = ParameterGroups.Build(torchModel, groupOptions);
        Assert.Equal(layerDecay is null ? 2 : 2 * (Tiny.Depth + 2), torchGroups.Count);
        var referenceGroups = torchGroups
            .Select(g => new AdamW.ParamGroup(g.Parameters.Select(p => p.Parameter), lr: 0, beta1: options.Beta1, beta2: options.Beta2,
                eps: options.Eps, weight_decay: g.AppliesWeightDecay ? options.WeightDecay : 0))
            .ToArray();
        using var reference = optim.AdamW(referenceGroups);
        var lrSchedule = CosineSchedule.LearningRate(2e-3, 1e-5, totalSteps: 6, warmupSteps: 2, warmupStartLr: 1e-4);
        var wdSchedule = CosineSchedule.WeightDecay(0.05, 0.2, totalSteps: 6);
        var generator = new Generator(7);
        for (int step = 0; step < 6; step++)
        {
            using var stepScope = NewDisposeScope();
            var pixels = randn([4, 3, 16, 16], generator: generator);
            var labels = randint(0, 3, [4], generator: generator);
            double lr = lrSchedule.ValueAt(step), wd = wdSchedule.ValueAt(step);

            flat.ZeroGrad();
            Loss(flatModel, pixels, labels).backward();
            if (clip > 0) flat.ClipGradNorm(clip);
            flat.Step(lr, wd);

            reference.zero_grad();
            Loss(torchModel, pixels, labels).backward();
            if (clip > 0) nn.utils.clip_grad_norm_(torchModel.parameters(), clip);
            for (int g = 0; g < referenceGroups.Length; g++)
            {
                referenceGroups[g].LearningRate = lr * torchGroups[g].LrScale;
                referenceGroups[g].Options.weight_decay = torchGroups[g].AppliesWeightDecay ? wd : 0;
            }
            reference.step();
        }

        Assert.Equal(6, flat.StepCount);
        Assert.Equal(0, flat.ForeignGradientCopies);
        var expected = torchModel.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        double worstParameter = 0, worstUpdate = 0;
        string worstName = "";
        foreach (var (name, actual) in flatModel.named_parameters())
        {
            double parameterError = RelativeL2(actual, expected[name]);
            double updateError = RelativeL2(actual - initial[name], expected[name] - initial[name]);
            if (parameterError > worstParameter) (worstParameter, worstName) = (parameterError, name);
            worstUpdate = Math.Max(worstUpdate, updateError);
        }
        output.WriteLine($"layer decay {layerDecay?.ToString() ?? "none"}, clip {clip}: worst parameter relative L2 {worstParameter:E2} ({worstName}), worst update relative L2 {worstUpdate:E2}");
        Assert.True(worstParameter <= 1e-6, $"{worstName}: relative L2 error {worstParameter:E2}");
        Assert.True(worstUpdate <= 1e-4, $"update relative L2 error {worstUpdate:E2}");
    }

    [Fact]
    public void Parameters_and_gradients_are_views_of_the_flat_buffers()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(Tiny, seed: 3);
        using var copy = NewModel(Tiny, seed: 4);
        CopyParameters(model, copy);
        using var optimizer = new FlatAdamW(ParameterGroups.Build(model), new AdamWOptions());
        long total = model.parameters().Sum(p => p.numel());
        Assert.Equal(total, optimizer.Length);
        Assert.Equal(total, optimizer.FlatParameters.numel());

        // Re-pointing keeps values, leaves, and requires_grad; the forward is unchanged bit for bit.
        var pixels = randn(2, 3, 16, 16);
        Assert.True(model.forward(pixels).allclose(copy.forward(pixels), 0, 0));
        Assert.All(model.parameters(), p => Assert.True(p.requires_grad && p.is_leaf));

        // Writing the flat buffer changes the module's parameters.
        var segment = optimizer.Layout.Single(s => s.Name == "blocks.1.attn.qkv.weight");
        var parameter = model.named_parameters().Single(p => p.name == segment.Name).parameter;
        using (no_grad()) optimizer.FlatParameters.narrow(0, segment.Offset, 5).fill_(42);
        Assert.Equal(42f, parameter.flatten()[4].item<float>());
        Assert.NotEqual(42f, parameter.flatten()[5].item<float>());
        Assert.False(model.forward(pixels).allclose(copy.forward(pixels), 0, 0));

        // Backward accumulates straight into the flat gradient buffer.
        optimizer.ZeroGrad();
        model.ForwardHead(model.forward(pixels)).square().sum().backward();
        var gathered = Gradients(model, optimizer.Layout);
        Assert.True(gathered.allclose(optimizer.FlatGradients, 0, 0));
        Assert.True(optimizer.FlatGradients.abs().sum().item<float>() > 0);
        using (no_grad()) optimizer.FlatGradients.narrow(0, segment.Offset, 1).fill_(-7);
        Assert.Equal(-7f, parameter.grad!.flatten()[0].item<float>());
        optimizer.Step(1e-3);
        Assert.Equal(0, optimizer.ForeignGradientCopies);

        // A module zero_grad(set_to_none) drops the views; the optimiser copies the fresh gradients in and re-attaches.
        model.zero_grad();
        model.ForwardHead(model.forward(pixels)).square().sum().backward();
        var fresh = Gradients(model, optimizer.Layout).clone();
        double norm = optimizer.GradNorm();
        Assert.Equal(optimizer.Layout.Count, optimizer.ForeignGradientCopies);
        Assert.True(fresh.allclose(optimizer.FlatGradients, 0, 0));
        Assert.True(Math.Abs(norm - fresh.to(float64).norm().item<double>()) <= 1e-6 * norm);
        using (no_grad()) optimizer.FlatGradients.narrow(0, segment.Offset, 1).fill_(-9);
        Assert.Equal(-9f, parameter.grad!.flatten()[0].item<float>());
    }

    [Theory]
    [InlineData(0.05)]
    [InlineData(1e6)]
    public void Clipping_returns_torchs_norm_and_scales_like_clip_grad_norm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(Tiny, seed: 5);
        using var copy = NewModel(Tiny, seed: 6);
        CopyParameters(model, copy);
        using var optimizer = new FlatAdamW(ParameterGroups.Build(model), new AdamWOptions());
        random.manual_seed(8);
        var pixels = randn(3, 3, 16, 16);
        var labels = tensor(new long[] { 0, 2, 1 });
        optimizer.ZeroGrad();
        Loss(model, pixels, labels).backward();
        Loss(copy, pixels, labels).backward();
        var unclipped = Gradients(copy, optimizer.Layout).clone();
        double exact = unclipped.to(float64).norm().item<double>();

        double flatNorm = optimizer.ClipGradNorm(maxNorm);
        double torchNorm = nn.utils.clip_grad_norm_(copy.parameters(), maxNorm);
        output.WriteLine($"max norm {maxNorm}: flat {flatNorm:R}, torch {torchNorm:R}, float64 {exact:R}");
        Assert.True(Math.Abs(flatNorm - torchNorm) <= 1e-6 * torchNorm, $"norm {flatNorm} vs torch {torchNorm}");
        Assert.True(RelativeL2(optimizer.FlatGradients, Gradients(copy, optimizer.Layout)) <= 1e-6);
        if (maxNorm >= torchNorm)
            Assert.True(optimizer.FlatGradients.allclose(unclipped, 0, 0));
        else
            Assert.Equal(maxNorm, optimizer.FlatGradients.norm().item<float>(), 1e-5);
    }

    [Fact]
    public void Saved_state_resumes_into_a_fresh_optimiser_exactly()
    {
        using var scope = NewDisposeScope();
        using var directory = new TemporaryDirectory();
        var groupOptions = new ParameterGroupOptions { LayerDecay = 0.8 };
        var options = new AdamWOptions { WeightDecay = 0.05 };
        var generator = new Generator(9);
        var batches = Enumerable.Range(0, 4)
            .Select(_ => (Pixels: randn([2, 3, 16, 16], generator: generator), Labels: randint(0, 3, [2], generator: generator)))
            .ToArray();

        using var model = NewModel(Tiny, seed: 10);
        using var optimizer = new FlatAdamW(ParameterGroups.Build(model, groupOptions), options);
        for (int step = 0; step < 3; step++) TrainStep(model, optimizer, batches[step], 1e-3);
        string weights = directory.Combine("model.safetensors"), state = directory.Combine("optimizer.safetensors");
        ModelDirectory.WriteWeights(weights, model);
        WriteState(state, optimizer);

        using var resumedModel = NewModel(Tiny, seed: 11);
        using var resumed = new FlatAdamW(ParameterGroups.Build(resumedModel, groupOptions), options);
        using (var file = SafetensorsFile.Open(weights)) WeightLoader.LoadStrict(resumedModel, file);
        using (var file = SafetensorsFile.Open(state))
        {
            Assert.Equal(resumed.LayoutDigest, file.Metadata["layout"]);
            resumed.LoadState(new Dictionary<string, Tensor>
            {
                ["exp_avg"] = tensor(file.ReadFloat32("exp_avg")),
                ["exp_avg_sq"] = tensor(file.ReadFloat32("exp_avg_sq")),
                ["step"] = tensor(file.Read<long>("step")[0]),
            });
        }
        Assert.Equal(3, resumed.StepCount);

        TrainStep(model, optimizer, batches[3], 1e-3);
        TrainStep(resumedModel, resumed, batches[3], 1e-3);
        Assert.Equal(optimizer.StepCount, resumed.StepCount);
        Assert.True(resumed.FlatParameters.allclose(optimizer.FlatParameters, 0, 0));
        var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in resumedModel.named_parameters())
            Assert.True(parameter.allclose(expected[name], 0, 0), name);
        using var exact = optimizer.StateTensors()["exp_avg_sq"];
        Assert.True(resumed.StateTensors()["exp_avg_sq"].allclose(exact, 0, 0));
    }

    [Fact]
    public void Grouping_spares_norms_biases_gammas_tokens_and_position_tables_under_any_prefix()
    {
        using var scope = NewDisposeScope();
        var beit = Tiny with { Depth = 2, UseMaskToken = true, UseSharedRelPosBias = true, GlobalPool = "avg" };
        using var model = new VisionTransformer(beit);
        using var vit = new VisionTransformer(new VitConfig { ImgSize = 16, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2, InitValues = 0.1 });
        var named = model.named_parameters().Select(p => new NamedParameter("backbone." + p.name, p.parameter))
            .Concat(vit.named_parameters().Select(p => new NamedParameter("teacher.encoder." + p.name, p.parameter)))
            .ToList();
        named.Single(p => p.Name == "backbone.blocks.1.attn.proj.weight").Parameter.requires_grad = false;

        var groups = ParameterGroups.Build(named);
        Assert.Equal(new[] { "decay", "no_decay" }, groups.Select(g => g.Name).Order());
        var decayed = groups.Single(g => g.AppliesWeightDecay).Parameters.Select(p => p.Name).ToHashSet();
        var spared = groups.Single(g => !g.AppliesWeightDecay).Parameters.Select(p => p.Name).ToHashSet();
        Assert.All(groups, g => Assert.Equal(1.0, g.LrScale));
        Assert.Equal(named.Count - 1, decayed.Count + spared.Count);
        Assert.DoesNotContain("backbone.blocks.1.attn.proj.weight", decayed.Concat(spared));

        string[] expectedDecay =
        [
            "backbone.patch_embed.proj.weight", "backbone.head.weight",
            "backbone.blocks.0.attn.qkv.weight", "backbone.blocks.0.attn.proj.weight", "backbone.blocks.0.mlp.fc1.weight", "backbone.blocks.0.mlp.fc2.weight",
            "backbone.blocks.1.attn.qkv.weight", "backbone.blocks.1.mlp.fc1.weight", "backbone.blocks.1.mlp.fc2.weight",
            "teacher.encoder.patch_embed.proj.weight", "teacher.encoder.blocks.0.attn.qkv.weight", "teacher.encoder.blocks.0.attn.proj.weight",
            "teacher.encoder.blocks.0.mlp.fc1.weight", "teacher.encoder.blocks.0.mlp.fc2.weight",
        ];
        Assert.Equal(expectedDecay.Order(), decayed.Order());
        foreach (string name in new[]
                 {
                     "backbone.cls_token", "backbone.mask_token", "backbone.pos_embed", "backbone.rel_pos_bias.relative_position_bias_table",
                     "backbone.blocks.0.attn.relative_position_bias_table", "backbone.blocks.0.attn.q_bias", "backbone.blocks.0.attn.v_bias",
                     "backbone.blocks.0.gamma_1", "backbone.blocks.1.gamma_2", "backbone.blocks.0.norm1.weight", "backbone.blocks.0.norm2.bias",
                     "backbone.blocks.0.attn.proj.bias", "backbone.fc_norm.weight", "backbone.head.bias",
                     "teacher.encoder.blocks.0.ls1.gamma", "teacher.encoder.blocks.0.ls2.gamma", "teacher.encoder.blocks.0.attn.qkv.bias",
                     "teacher.encoder.norm.weight", "teacher.encoder.cls_token", "teacher.encoder.pos_embed",
                 })
            Assert.Contains(name, spared);

        Assert.True(ParameterGroups.SkipsWeightDecay("logit_scale", 2, new HashSet<string> { "logit_scale" }));
        Assert.True(ParameterGroups.SkipsWeightDecay("head.ls3.gamma", 2));
        Assert.False(ParameterGroups.SkipsWeightDecay("head.gamma", 2));
    }

    [Fact]
    public void Layer_decay_scales_a_four_block_model_as_beit_does()
    {
        using var scope = NewDisposeScope();
        var config = Tiny with { Depth = 4, UseSharedRelPosBias = true, UseRelPosBias = false, UseMaskToken = true, GlobalPool = "avg" };
        using var model = new VisionTransformer(config);
        var named = model.named_parameters().Select(p => new NamedParameter("encoder." + p.name, p.parameter)).ToList();
        const double Decay = 0.5;
        var groups = ParameterGroups.Build(named, new ParameterGroupOptions { LayerDecay = Decay });
        var explicitDepth = ParameterGroups.Build(named, new ParameterGroupOptions { LayerDecay = Decay, Depth = 4 });
        Assert.Equal(groups.Select(g => (g.Name, g.LrScale, g.Parameters.Count)), explicitDepth.Select(g => (g.Name, g.LrScale, g.Parameters.Count)));

        var scaleOf = groups.SelectMany(g => g.Parameters.Select(p => (p.Name, g.LrScale, g.LayerId, g.AppliesWeightDecay, Group: g.Name)))
            .ToDictionary(p => p.Name);
        (string Name, int Layer)[] expected =
        [
            ("encoder.patch_embed.proj.weight", 0), ("encoder.patch_embed.proj.bias", 0), ("encoder.cls_token", 0),
            ("encoder.mask_token", 0), ("encoder.pos_embed", 0), ("encoder.rel_pos_bias.relative_position_bias_table", 0),
            ("encoder.blocks.0.norm1.weight", 1), ("encoder.blocks.0.attn.qkv.weight", 1), ("encoder.blocks.1.mlp.fc2.weight", 2),
            ("encoder.blocks.2.gamma_1", 3), ("encoder.blocks.3.attn.q_bias", 4), ("encoder.blocks.3.mlp.fc1.weight", 4),
            ("encoder.fc_norm.weight", 5), ("encoder.fc_norm.bias", 5), ("encoder.head.weight", 5), ("encoder.head.bias", 5),
        ];
        foreach (var (name, layer) in expected)
        {
            Assert.Equal(layer, scaleOf[name].LayerId);
            Assert.Equal(Math.Pow(Decay, 5 - layer), scaleOf[name].LrScale);
            Assert.Equal($"layer_{layer}_{(scaleOf[name].AppliesWeightDecay ? "decay" : "no_decay")}", scaleOf[name].Group);
        }
        Assert.Equal(1.0 / 32, scaleOf["encoder.cls_token"].LrScale);
        Assert.Equal(1.0, scaleOf["encoder.head.weight"].LrScale);
        Assert.Equal(12, ParameterGroups.LayerId("model.backbone.blocks.11.attn.qkv.weight", 12));
        Assert.Equal(13, ParameterGroups.LayerId("model.backbone.norm.weight", 12));
        Assert.Equal(0, ParameterGroups.LayerId("student.patch_embed.proj.weight", 12));

        // The flat optimiser carries the scales per element: a step with only the head's gradient non-zero moves the
        // head by lr and nothing else; the same gradient on a block-0 weight moves it by lr·decay⁴.
        using var optimizer = new FlatAdamW(groups, new AdamWOptions { WeightDecay = 0 });
        var head = optimizer.Layout.Single(s => s.Name == "encoder.head.bias");
        var block = optimizer.Layout.Single(s => s.Name == "encoder.blocks.0.norm1.bias");
        var before = optimizer.FlatParameters.clone();
        optimizer.ZeroGrad();
        using (no_grad())
        {
            optimizer.FlatGradients.narrow(0, head.Offset, 1).fill_(1);
            optimizer.FlatGradients.narrow(0, block.Offset, 1).fill_(1);
        }
        optimizer.Step(0.1);
        var moved = (before - optimizer.FlatParameters).abs();
        Assert.Equal(0.1, moved[head.Offset].item<float>(), 1e-5);
        Assert.Equal(0.1 * Math.Pow(Decay, 4), moved[block.Offset].item<float>(), 1e-6);
        Assert.Equal(0f, moved.sum().item<float>() - moved[head.Offset].item<float>() - moved[block.Offset].item<float>(), 1e-6);
    }

    [Fact]
    public void Cosine_schedules_hit_beits_values_at_the_landmarks()
    {
        var lr = CosineSchedule.LearningRate(baseLr: 1e-3, minLr: 1e-5, totalSteps: 110, warmupSteps: 10, warmupStartLr: 1e-6);
        Assert.Equal(1e-6, lr.ValueAt(0));
        Assert.Equal(1e-6 + 5 * ((1e-3 - 1e-6) / 9), lr.ValueAt(5));
        // numpy's linspace reaches the base on the last warmup step; the cosine starts from it on the next.
        Assert.Equal(1e-3, lr.ValueAt(9));
        Assert.Equal(1e-3, lr.ValueAt(10));
        Assert.Equal((1e-3 + 1e-5) / 2, lr.ValueAt(60), 15);
        Assert.Equal(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + Math.Cos(Math.PI * 99 / 100)), lr.ValueAt(109));
        Assert.Equal(1e-5, lr.ValueAt(110));
        Assert.Equal(1e-5, lr.ValueAt(10_000));
        Assert.True(Enumerable.Range(10, 100).All(s => lr.ValueAt(s + 1) <= lr.ValueAt(s)));

        var noWarmup = CosineSchedule.LearningRate(5e-4, 0, totalSteps: 4, warmupSteps: 0);
        Assert.Equal([5e-4, 5e-4 * 0.5 * (1 + Math.Cos(Math.PI / 4)), 2.5e-4, 5e-4 * 0.5 * (1 + Math.Cos(3 * Math.PI / 4)), 0],
            Enumerable.Range(0, 5).Select(s => noWarmup.ValueAt(s)).ToArray());

        var weightDecay = CosineSchedule.WeightDecay(0.04, 0.4, totalSteps: 100);
        Assert.Equal(0.04, weightDecay.ValueAt(0));
        Assert.Equal(0.22, weightDecay.ValueAt(50), 15);
        Assert.Equal(0.4, weightDecay.ValueAt(100));

        var momentum = CosineSchedule.EmaMomentum(totalSteps: 1000);
        Assert.Equal(0.996, momentum.ValueAt(0));
        Assert.Equal(0.998, momentum.ValueAt(500), 15);
        Assert.Equal(1.0, momentum.ValueAt(1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineSchedule(1, 0, totalSteps: 10, warmupSteps: 11));
    }

    private static VisionTransformer NewModel(VitConfig config, long seed)
    {
        var model = new VisionTransformer(config);
        Initialization.Apply(model, seed);
        return model;
    }

    private static void CopyParameters(nn.Module from, nn.Module to)
    {
        using var noGrad = no_grad();
        var source = from.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in to.named_parameters()) parameter.copy_(source[name]);
    }

    /// <summary>The module's gradients concatenated in the optimiser's buffer order (groups first, not module order).</summary>
    private static Tensor Gradients(nn.Module model, IEnumerable<FlatSegment> layout)
    {
        var byName = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        return cat(layout.Select(s => byName[s.Name].grad!.flatten()).ToArray());
    }

    private static Tensor Loss(VisionTransformer model, Tensor pixels, Tensor labels) =>
        nn.functional.cross_entropy(model.ForwardHead(model.forward(pixels)), labels);

    private static void TrainStep(VisionTransformer model, FlatAdamW optimizer, (Tensor Pixels, Tensor Labels) batch, double lr)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        Loss(model, batch.Pixels, batch.Labels).backward();
        optimizer.ClipGradNorm(3.0);
        optimizer.Step(lr);
    }

    private static void WriteState(string path, FlatAdamW optimizer)
    {
        var writer = new SafetensorsWriter();
        writer.Metadata["layout"] = optimizer.LayoutDigest;
        foreach (var (name, value) in optimizer.StateTensors())
        {
            using (value)
            {
                if (value.dtype == ScalarType.Int64) writer.Add<long>(name, SafetensorsDType.I64, [], [value.item<long>()]);
                else writer.AddFloat32(name, value.shape, value.data<float>().ToArray());
            }
        }
        writer.Write(path);
    }

    private static double RelativeL2(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(float64);
        var e = expected.detach().to(float64);
        double norm = e.norm().item<double>();
        double error = (a - e).norm().item<double>();
        return norm == 0 ? error : error / norm;
    }
}
