using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using MimFlow.Training.Runs;
using static TorchSharp.torch;

namespace MimFlow.Tests.Training;

public sealed class RunTests
{
    [Fact]
    public void A_resumed_metrics_log_keeps_each_step_once()
    {
        using var dir = new TemporaryDirectory();
        using (var log = MetricsLog.Open(dir.Path, keepThroughStep: null))
            for (long step = 0; step < 10; step++) log.Write(new Dictionary<string, object> { ["step"] = step, ["loss"] = 10.0 - step, ["lr"] = 1e-3, ["images_per_second"] = 5.0 });
        using (var log = MetricsLog.Open(dir.Path, keepThroughStep: 5))
            for (long step = 6; step < 8; step++) log.Write(new Dictionary<string, object> { ["step"] = step, ["loss"] = 1.0, ["lr"] = 1e-3, ["images_per_second"] = 5.0 });
        var steps = MetricsLog.Read(dir.Path).Select(e => e["step"]!.GetValue<long>()).ToList();
        Assert.Equal(Enumerable.Range(0, 8).Select(i => (long)i), steps);

        var pictures = RunPlots.Draw(dir.Path);
        Assert.Equal(["loss.png", "lr.png", "throughput.png"], pictures.Select(Path.GetFileName));
        Assert.All(pictures, p => Assert.True(new FileInfo(p).Length > 1000));
    }

    [Fact]
    public void Checkpoints_restore_parameters_and_optimizer_state_and_keep_the_last_ones()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var config = new VitConfig { ImgSize = 16, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2, NumClasses = 0, UseMaskToken = true };
        using var model = new VisionTransformer(config);
        Initialization.Apply(model, 1);
        var store = new CheckpointStore(dir.Path, keep: 2);
        Assert.Null(store.Latest());
        var optimizer = new Dictionary<string, Tensor> { ["exp_avg"] = arange(5, dtype: float32), ["step"] = tensor(new float[] { 3 }) };
        for (long step = 1; step <= 3; step++)
            store.Save(new TrainerState(step * 10, 0, step, 0, "beit", "test", 7), new ModelSpec("vit-test", Config: config), model, model, optimizer);
        string latest = store.Latest()!;
        Assert.EndsWith("step-00000030", latest);
        Assert.Equal(["step-00000020", "step-00000030"], Directory.EnumerateDirectories(Path.Combine(dir.Path, "checkpoints")).Select(Path.GetFileName).Order());
        Assert.Equal(30, CheckpointStore.ReadState(latest).Step);
        var (spec, backbone) = ModelDirectory.LoadVit(Path.Combine(latest, "backbone"));
        Assert.Equal(config, spec.Config);

        using var fresh = new VisionTransformer(config);
        var restored = CheckpointStore.Restore(latest, fresh);
        foreach (var (name, value) in model.state_dict()) Assert.True(value.allclose(fresh.state_dict()[name], 0, 0), name);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, restored["exp_avg"].data<float>().ToArray());
        backbone.Dispose();
    }
}
