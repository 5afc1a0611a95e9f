using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class PositionResamplingTests
{
    public PositionResamplingTests() => TorchBackend.EnsureLoaded();

    [Fact]
    public void Stretched_offsets_keep_unit_steps_near_zero_and_reach_the_new_range()
    {
        double[] offsets = PositionResampling.StretchedOffsets(source: 27, target: 47);
        Assert.Equal(27, offsets.Length);
        Assert.Equal(0, offsets[13]);
        Assert.Equal(1, offsets[14]);
        for (int i = 0; i < 13; i++) Assert.Equal(-offsets[26 - i], offsets[i]);
        for (int i = 15; i < 27; i++) Assert.True(offsets[i] - offsets[i - 1] > offsets[i - 1] - offsets[i - 2] - 1e-12, "steps grow geometrically");
        Assert.InRange(offsets[26], 23 - 0.01, 23 + 0.01);
    }

    [Fact]
    public void Relative_table_resampling_reproduces_a_linear_bias_field_and_keeps_the_cls_rows()
    {
        using var scope = NewDisposeScope();
        const int source = 4, target = 7, heads = 2;
        int span = 2 * source - 1;
        var table = new float[(span * span + 3) * heads];
        // A bias linear in the stretched offsets, a·y + b·x + c per head: bilinear interpolation must reproduce it at every
        // integer offset of the new grid inside the stretched range.
        double[] offsets = PositionResampling.StretchedOffsets(span, 2 * target - 1);
        for (int dy = 0; dy < span; dy++)
        for (int dx = 0; dx < span; dx++)
        for (int h = 0; h < heads; h++)
            table[(dy * span + dx) * heads + h] = (float)((h + 1) * 0.5 * offsets[dy] - 0.25 * offsets[dx] + h);
        for (int i = span * span * heads; i < table.Length; i++) table[i] = 100 + i;
        var resized = PositionResampling.ResampleRelativeTable(tensor(table, [span * span + 3, heads]), source, target);
        int newSpan = 2 * target - 1;
        Assert.Equal(new long[] { newSpan * newSpan + 3, heads }, resized.shape);
        double reach = offsets[^1];
        var values = resized.data<float>().ToArray();
        for (int dy = 0; dy < newSpan; dy++)
        for (int dx = 0; dx < newSpan; dx++)
        for (int h = 0; h < heads; h++)
        {
            // Targets beyond the stretched range are clamped to the edge value.
            double y = Math.Clamp(dy - target + 1, -reach, reach), x = Math.Clamp(dx - target + 1, -reach, reach);
            double expected = (h + 1) * 0.5 * y - 0.25 * x + h;
            Assert.Equal(expected, values[(dy * newSpan + dx) * heads + h], 1e-4);
        }
        Assert.Equal(table[^6..], values[^6..]);
    }

    [Fact]
    public void Absolute_resampling_keeps_the_class_token_and_constant_maps()
    {
        using var scope = NewDisposeScope();
        var embedding = cat([full(1, 1, 8, 7f), full(1, 16, 8, 3f)], 1);
        var larger = PositionResampling.ResampleAbsolute(embedding, 4, 6);
        Assert.Equal(new long[] { 1, 37, 8 }, larger.shape);
        Assert.True(allclose(larger[.., 0], full(1, 8, 7f)));
        Assert.True(allclose(larger[.., 1..], full(1, 36, 8, 3f), 1e-5, 1e-5));
        var smaller = PositionResampling.ResampleAbsolute(embedding, 4, 2);
        Assert.True(allclose(smaller[.., 1..], full(1, 4, 8, 3f), 1e-5, 1e-5));
        Assert.True(PositionResampling.ResampleAbsolute(embedding, 4, 4).allclose(embedding, 0, 0));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_model_loads_into_another_image_size_and_runs_there(bool relative)
    {
        using var dir = new TemporaryDirectory();
        using var scope = NewDisposeScope();
        var config = new VitConfig
        {
            ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2, NumClasses = 3, BeitAttention = relative,
            UseAbsPosEmb = !relative, UseRelPosBias = relative, InitValues = relative ? 0.1 : null,
        };
        using var model = new VisionTransformer(config);
        Initialization.Apply(model, 11);
        model.eval();
        ModelDirectory.Save(dir.Path, "vit-test", model);

        using var noGrad = no_grad();
        var (_, same) = ModelDirectory.LoadVit(dir.Path, 32);
        var pixels = randn(2, 3, 32, 32, generator: new Generator(2));
        same.eval();
        Assert.True(model.ForwardFeatures(pixels).allclose(same.ForwardFeatures(pixels), 0, 0), "resampling to the same grid must be exact");

        var (spec, larger) = ModelDirectory.LoadVit(dir.Path, 48);
        larger.eval();
        Assert.Equal(48, spec.Config!.ImgSize);
        var features = larger.ForwardFeatures(randn(2, 3, 48, 48, generator: new Generator(3)));
        Assert.Equal(new long[] { 2, 37, 32 }, features.shape);
        Assert.True(features.isfinite().all().item<bool>());
        string resampled = relative ? "blocks.0.attn.relative_position_bias_table" : "pos_embed";
        var original = model.state_dict()[resampled];
        var moved = larger.state_dict()[resampled];
        Assert.NotEqual(original.shape, moved.shape);
        Assert.Throws<InvalidDataException>(() => WeightLoaderStrictInto(dir.Path, config with { ImgSize = 48 }));
    }

    private static void WeightLoaderStrictInto(string directory, VitConfig config)
    {
        using var model = new VisionTransformer(config);
        using var weights = MimFlow.Core.Safetensors.SafetensorsFile.Open(Path.Combine(directory, ModelDirectory.WeightsFileName));
        WeightLoader.LoadStrict(model, weights);
    }
}
