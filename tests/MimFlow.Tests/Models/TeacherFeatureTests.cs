using MimFlow.Models.Backbones;
using MimFlow.Models.Teachers;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class TeacherFeatureTests
{
    public TeacherFeatureTests() => TorchBackend.EnsureLoaded();

    [Fact]
    public void Teacher_targets_are_last_layer_patch_tokens_their_layer_mean_or_their_projection()
    {
        using var scope = NewDisposeScope();
        var config = Architectures.Get("clip-b16", numClasses: 12) with { ImgSize = 32, EmbedDim = 32, Depth = 3, NumHeads = 2 };
        using var teacher = new VisionTransformer(config);
        Initialization.Apply(teacher, 5);
        teacher.eval();
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32, generator: new Generator(4));

        var last = TeacherFeatures.Extract(teacher, pixels, new TeacherOptions());
        Assert.True(allclose(last, teacher.ForwardFeatures(pixels)[.., 1..], 1e-6, 1e-6));

        var (_, hidden) = teacher.ForwardLayers(pixels, null, [1, 2]);
        var norm = teacher.named_modules().Single(m => m.name == "norm").module as TorchSharp.Modules.LayerNorm;
        var expectedMean = (norm!.forward(hidden[1]) + norm.forward(hidden[2]))[.., 1..] / 2;
        Assert.True(allclose(TeacherFeatures.Extract(teacher, pixels, new TeacherOptions(LastLayers: 2)), expectedMean, 1e-5, 1e-5));

        var projected = TeacherFeatures.Extract(teacher, pixels, new TeacherOptions(Project: true));
        Assert.Equal(new long[] { 2, 4, 12 }, projected.shape);
        var head = teacher.named_modules().Single(m => m.name == "head").module as TorchSharp.Modules.Linear;
        Assert.True(allclose(projected, head!.forward(last), 1e-5, 1e-5));

        Assert.Throws<ArgumentException>(() => TeacherFeatures.Extract(teacher, pixels, new TeacherOptions(LastLayers: 4)));
    }
}
