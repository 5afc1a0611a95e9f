using MimFlow.Models.Backbones;
using MimFlow.Training.Kernel;
using MimFlow.Training.Objectives;
using MimFlow.Training.Optimization;
using MimFlow.Training.Pretraining;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

public sealed class TrainerKernelTests
{
    public TrainerKernelTests() => TorchBackend.EnsureLoaded();

    private static VisionTransformer Tiny(double dropPath = 0.5, int depth = 2)
    {
        var model = new VisionTransformer(new VitConfig { ImgSize = 16, PatchSize = 8, EmbedDim = 16, Depth = depth, NumHeads = 2, NumClasses = 3, DropPathRate = dropPath });
        Initialization.Apply(model, 1);
        model.train();
        return model;
    }

    private static float[] Flat(VisionTransformer model) => model.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).ToArray();

    [Fact]
    public void A_non_finite_loss_moves_no_weight_and_leaves_no_gradient_behind()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        using var optimizer = new FlatAdamW(ParameterGroups.Build(model), new AdamWOptions());
        var kernel = new TrainerKernel(optimizer, seed: 3, CPU, clipGradient: 1.0);
        var before = Flat(model);
        bool afterStepRan = false;
        var outcome = kernel.Step(0, 1e-2, model, () => model.ForwardHead(model.ForwardFeatures(randn(2, 3, 16, 16))).sum() * double.NaN,
            new StepHooks(AfterStep: () => afterStepRan = true));
        Assert.False(outcome.Applied);
        Assert.True(double.IsNaN(outcome.Loss));
        Assert.Equal(before, Flat(model));
        Assert.False(afterStepRan);
        Assert.All(model.parameters(), p => Assert.True(p.grad is null || p.grad.abs().sum().item<float>() == 0));

        var applied = kernel.Step(1, 1e-2, model, () => model.ForwardHead(model.ForwardFeatures(randn(2, 3, 16, 16))).pow(2).sum(),
            new StepHooks(AfterStep: () => afterStepRan = true));
        Assert.True(applied.Applied);
        Assert.True(applied.GradientNorm > 0, "the norm before clipping is reported");
        Assert.NotEqual(before, Flat(model));
        Assert.True(afterStepRan);
    }

    [Fact]
    public void Stochastic_depth_draws_depend_on_the_seed_and_step_only()
    {
        using var scope = NewDisposeScope();
        var input = randn(16, 3, 16, 16, generator: new Generator(5));
        double LossAt(long step, ulong seed)
        {
            using var model = Tiny(dropPath: 0.5, depth: 6);
            using var optimizer = new FlatAdamW(ParameterGroups.Build(model), new AdamWOptions());
            // The global generator is disturbed between runs: the kernel's draws must not depend on it.
            manual_seed(step * 31 + (long)seed);
            return new TrainerKernel(optimizer, seed, CPU, null).Step(step, 0, model, () => model.ForwardHead(model.ForwardFeatures(input)).pow(2).sum()).Loss;
        }
        Assert.Equal(LossAt(7, 1), LossAt(7, 1));
        Assert.NotEqual(LossAt(7, 1), LossAt(8, 1));
        Assert.NotEqual(LossAt(7, 1), LossAt(7, 2));
    }

    [Fact]
    public void Dropout_draws_from_the_step_generator_and_a_rank_keeps_its_rows_of_the_global_draw()
    {
        using var scope = NewDisposeScope();
        var x = rand(4, 8, 6, generator: new Generator(2)) + 1;
        using var dropout = new SeededDropout(0.5);
        dropout.train();
        Tensor Drop(Tensor input, ulong seed, BatchRows? rows = null)
        {
            using var generator = new Generator(seed);
            StepRandomness.UseGenerator(dropout, generator, rows);
            manual_seed((long)seed * 17 + 3); // the global generator is disturbed: the draws must not depend on it
            try { return dropout.forward(input); }
            finally { StepRandomness.UseGenerator(dropout, null); }
        }
        var whole = Drop(x, 9);
        Assert.Equal(whole.data<float>().ToArray(), Drop(x, 9).data<float>().ToArray());
        Assert.NotEqual(whole.data<float>().ToArray(), Drop(x, 10).data<float>().ToArray());
        // Zeros where dropped, 1/(1 − p) times the input where kept, about half of each.
        var kept = whole.ne(0);
        Assert.InRange(kept.to(ScalarType.Float32).mean().item<float>(), 0.35f, 0.65f);
        Assert.True(whole.masked_select(kept).allclose(x.masked_select(kept) * 2));
        // Rank 1 of 2 computes rows 2–3 and drops them exactly as the single process does.
        var rank1 = Drop(x.narrow(0, 2, 2), 9, new BatchRows(2, 2, 4));
        Assert.Equal(whole.narrow(0, 2, 2).data<float>().ToArray(), rank1.data<float>().ToArray());
        dropout.eval();
        Assert.Equal(x.data<float>().ToArray(), dropout.forward(x).data<float>().ToArray());
    }

    [Fact]
    public void Every_objective_is_found_by_name_and_says_what_the_loop_needs()
    {
        Assert.Equal(["beit", "beitv2", "maskdistill", "ibot"], PretrainingObjectives.Names);
        Assert.Contains("unknown objective 'mae'", Assert.Throws<ArgumentException>(() => PretrainingObjectives.Find("mae")).Message);
        using var scope = NewDisposeScope();
        var config = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2, UseMaskToken = true };
        using var beit = new BeitObjective(new VisionTransformer(config), 16);
        using var ibot = new IbotObjective(new VisionTransformer(config), new IbotOptions { OutDim = 32, HeadHidden = 16, HeadBottleneck = 8 });
        Assert.Equal(0.999, beit.DefaultBeta2);
        Assert.True(((IMimObjective)beit).SupportsLowPrecision);
        Assert.False(((IMimObjective)ibot).SupportsLowPrecision);
        Assert.Equal(0.999, ibot.DefaultBeta2);
    }

    [Fact]
    public void The_pretraining_loop_and_its_inputs_name_no_objective()
    {
        foreach (string file in new[] { "Pretrainer.cs", "PretrainingInputs.cs" })
        {
            string source = File.ReadAllText(RepositoryFiles.PathOf("src", "MimFlow.Training", "Pretraining", file));
            foreach (string name in PretrainingObjectives.Names) Assert.DoesNotContain($"\"{name}\"", source);
            foreach (string type in new[] { "IbotObjective", "BeitObjective", "BeitV2Objective", "MaskDistillObjective" }) Assert.DoesNotContain(type, source);
        }
    }
}
