using System.Diagnostics;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Torch.Backend;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

/// <summary>One default-size (released architecture) encoder, built once for the tests that need it.</summary>
public sealed class DefaultDalleEncoderFixture : IDisposable
{
    public DefaultDalleEncoderFixture()
    {
        TorchBackend.EnsureLoaded();
        Encoder = DalleEncoder.Create(new DalleEncoderConfig(), seed: 11);
        Encoder.eval();
    }

    public DalleEncoder Encoder { get; }

    public void Dispose() => Encoder.Dispose();
}

public sealed class DalleEncoderTests(DefaultDalleEncoderFixture fixture, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<DefaultDalleEncoderFixture>
{
    private static readonly DalleEncoderConfig Small = new(HiddenSize: 16, VocabSize: 64);

    static DalleEncoderTests() => TorchBackend.EnsureLoaded();

    /// <summary>The original encoder's parameters, written out from its source: widths 1, 2, 4, 8 × 256, two blocks a group.</summary>
    private static List<(string Name, long[] Shape)> OriginalParameters()
    {
        var names = new List<(string, long[])> { ("blocks.input.w", [256, 3, 7, 7]), ("blocks.input.b", [256]) };
        int[] widths = [256, 512, 1024, 2048];
        for (int g = 0; g < 4; g++)
        for (int blk = 1; blk <= 2; blk++)
        {
            int nIn = blk == 1 ? (g == 0 ? 256 : widths[g - 1]) : widths[g], nOut = widths[g], hid = nOut / 4;
            string prefix = $"blocks.group_{g + 1}.block_{blk}.";
            if (nIn != nOut)
            {
                names.Add((prefix + "id_path.w", [nOut, nIn, 1, 1]));
                names.Add((prefix + "id_path.b", [nOut]));
            }
            names.Add((prefix + "res_path.conv_1.w", [hid, nIn, 3, 3]));
            names.Add((prefix + "res_path.conv_1.b", [hid]));
            names.Add((prefix + "res_path.conv_2.w", [hid, hid, 3, 3]));
            names.Add((prefix + "res_path.conv_2.b", [hid]));
            names.Add((prefix + "res_path.conv_3.w", [hid, hid, 3, 3]));
            names.Add((prefix + "res_path.conv_3.b", [hid]));
            names.Add((prefix + "res_path.conv_4.w", [nOut, hid, 1, 1]));
            names.Add((prefix + "res_path.conv_4.b", [nOut]));
        }
        names.Add(("blocks.output.conv.w", [8192, 2048, 1, 1]));
        names.Add(("blocks.output.conv.b", [8192]));
        return names;
    }

    [Fact]
    public void Default_encoder_has_the_original_parameter_names_shapes_and_count()
    {
        var state = fixture.Encoder.state_dict();
        var expected = OriginalParameters();
        Assert.Equal(expected.Select(e => e.Name), state.Keys);
        foreach (var (name, shape) in expected) Assert.True(shape.SequenceEqual(state[name].shape), $"{name}: [{string.Join(", ", state[name].shape)}]");

        // Spot checks written out by hand from dall_e/encoder.py.
        Assert.Equal(new long[] { 256, 3, 7, 7 }, state["blocks.input.w"].shape);
        Assert.Equal(new long[] { 64, 256, 3, 3 }, state["blocks.group_1.block_1.res_path.conv_1.w"].shape);
        Assert.Equal(new long[] { 64, 64, 3, 3 }, state["blocks.group_1.block_2.res_path.conv_3.w"].shape);
        Assert.Equal(new long[] { 256, 64, 1, 1 }, state["blocks.group_1.block_2.res_path.conv_4.w"].shape);
        Assert.Equal(new long[] { 512, 256, 1, 1 }, state["blocks.group_2.block_1.id_path.w"].shape);
        Assert.Equal(new long[] { 128, 256, 3, 3 }, state["blocks.group_2.block_1.res_path.conv_1.w"].shape);
        Assert.Equal(new long[] { 128, 512, 3, 3 }, state["blocks.group_2.block_2.res_path.conv_1.w"].shape);
        Assert.Equal(new long[] { 1024, 512, 1, 1 }, state["blocks.group_3.block_1.id_path.w"].shape);
        Assert.Equal(new long[] { 2048 }, state["blocks.group_4.block_1.id_path.b"].shape);
        Assert.Equal(new long[] { 2048, 512, 1, 1 }, state["blocks.group_4.block_2.res_path.conv_4.w"].shape);
        Assert.Equal(new long[] { 8192, 2048, 1, 1 }, state["blocks.output.conv.w"].shape);
        Assert.Equal(new long[] { 8192 }, state["blocks.output.conv.b"].shape);
        foreach (string absent in new[] { "blocks.group_1.block_1.id_path.w", "blocks.group_1.block_2.id_path.w", "blocks.group_2.block_2.id_path.w", "blocks.group_4.block_2.id_path.b" })
            Assert.False(state.ContainsKey(absent), absent);
        Assert.DoesNotContain(state.Keys, k => k.Contains("pool") || k.Contains("relu"));
        Assert.Equal(74, state.Count);

        // Parameter count from the architecture: conv(i, o, k) = o·i·k² + o; a block = [id 1×1] + 3×3 (i → o/4) + 2 × 3×3 (o/4 → o/4) + 1×1 (o/4 → o).
        static long Conv(long i, long o, long k) => o * i * k * k + o;
        static long Block(long i, long o) => (i != o ? Conv(i, o, 1) : 0) + Conv(i, o / 4, 3) + 2 * Conv(o / 4, o / 4, 3) + Conv(o / 4, o, 1);
        const long n = 256;
        long formula = Conv(3, n, 7)
                       + Block(n, n) + Block(n, n)
                       + Block(n, 2 * n) + Block(2 * n, 2 * n)
                       + Block(2 * n, 4 * n) + Block(4 * n, 4 * n)
                       + Block(4 * n, 8 * n) + Block(8 * n, 8 * n)
                       + Conv(8 * n, 8192, 1);
        long actual = fixture.Encoder.parameters().Sum(p => p.numel());
        Assert.Equal(formula, actual);
        Assert.Equal(53_786_240L, actual);
        Assert.All(fixture.Encoder.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
    }

    [Fact]
    public void Weights_start_as_the_original_normal_with_std_one_over_root_fan_in_and_zero_biases()
    {
        var state = fixture.Encoder.state_dict();
        foreach (var (name, tensor) in state.Where(p => p.Key.EndsWith(".b", StringComparison.Ordinal)))
            Assert.True(tensor.count_nonzero().item<long>() == 0, $"{name} is not zero");
        foreach (var (name, fanIn, tolerance) in new[]
                 {
                     ("blocks.input.w", 3 * 49, 0.03), ("blocks.group_1.block_1.res_path.conv_1.w", 256 * 9, 0.01),
                     ("blocks.group_2.block_1.id_path.w", 256, 0.01), ("blocks.group_4.block_2.res_path.conv_4.w", 512, 0.01),
                     ("blocks.output.conv.w", 2048, 0.01),
                 })
        {
            var w = state[name];
            double std = w.std().item<float>(), mean = w.mean().item<float>(), target = 1 / Math.Sqrt(fanIn);
            Assert.True(Math.Abs(std / target - 1) < tolerance, $"{name}: std {std:G5}, expected {target:G5}");
            Assert.True(Math.Abs(mean) < 3 * target / Math.Sqrt(w.numel()) + 1e-9, $"{name}: mean {mean:G5}");
        }

        using var scope = NewDisposeScope();
        using var a = DalleEncoder.Create(Small, seed: 3);
        using var b = DalleEncoder.Create(Small, seed: 3);
        using var c = DalleEncoder.Create(Small, seed: 4);
        var sa = a.state_dict();
        var sb = b.state_dict();
        var sc = c.state_dict();
        Assert.All(sa.Keys, k => Assert.True(Same(sa[k], sb[k]), $"{k} differs for the same seed"));
        Assert.False(Same(sa["blocks.input.w"], sc["blocks.input.w"]), "another seed gave the same weights");
    }

    [Fact]
    public void Map_pixels_is_dall_e_affine_map_to_the_logit_laplace_range()
    {
        using var scope = NewDisposeScope();
        float[] inputs = [0f, 0.25f, 0.5f, 0.75f, 1f, 0.1234567f];
        var mapped = DalleEncoder.MapPixels(tensor(inputs).reshape(1, 1, 2, 3)).data<float>().ToArray();
        // PyTorch evaluates (1 - 2·0.1)·x + 0.1 on a float32 tensor as two float32 ops: x·0.8f, then + 0.1f.
        float[] expected = inputs.Select(x => x * 0.8f + 0.1f).ToArray();
        Assert.Equal(expected, mapped);
        double[] exact = [0.1, 0.3, 0.5, 0.7, 0.9, 0.8 * 0.1234567 + 0.1];
        for (int i = 0; i < exact.Length; i++) Assert.Equal(exact[i], mapped[i], 1e-6);
        Assert.Equal(0.1, DalleEncoder.LogitLaplaceEps);
        Assert.Throws<ArgumentException>(() => DalleEncoder.MapPixels(zeros(3, 4, 4)));
    }

    [Fact]
    public void Encoder_block_matches_a_hand_computed_float64_reference()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(21);
        foreach (var (nIn, nOut) in new[] { (6, 8), (8, 8) })
        {
            using var block = new DalleEncoderBlock(nIn, nOut, layerCount: 3, generator);
            RandomizeBiases(block, generator);
            var x = randn(new long[] { 2, nIn, 5, 7 }, generator: generator);
            var actual = block.forward(x);
            Assert.Equal(new long[] { 2, nOut, 5, 7 }, actual.shape);

            var weights = Weights(block, prefix: "");
            Assert.Equal(nIn != nOut, weights.ContainsKey("id_path.w"));
            var reference = new Reference(weights, layerCount: 3);
            var expected = Batch(x).Select(image => reference.Block(image, "")).ToList();
            double error = RelativeL2(actual, expected);
            output.WriteLine($"block {nIn}→{nOut}: rel L2 vs float64 reference {error:E2}");
            Assert.True(error < 1e-6, $"block {nIn}→{nOut}: rel L2 {error:E2}");
        }
    }

    [Fact]
    public void Whole_small_encoder_matches_a_hand_computed_float64_reference()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(22);
        using var encoder = new DalleEncoder(Small, generator);
        RandomizeBiases(encoder, generator);
        var pixels = rand(new long[] { 2, 3, 32, 24 }, generator: generator);
        Tensor logits;
        using (no_grad()) logits = encoder.Logits(DalleEncoder.MapPixels(pixels));
        Assert.Equal(new long[] { 2, 64, 4, 3 }, logits.shape);

        var reference = new Reference(Weights(encoder, prefix: ""), layerCount: 8);
        var expected = Batch(pixels).Select(image => reference.Encoder(image with { V = image.V.Select(v => 0.8 * v + 0.1).ToArray() }, groups: 4, blocksPerGroup: 2)).ToList();
        double error = RelativeL2(logits, expected);
        output.WriteLine($"small encoder (n_hid 16, vocab 64, 32×24): rel L2 vs float64 reference {error:E2}");
        Assert.True(error < 1e-5, $"rel L2 {error:E2}");
    }

    [Fact]
    public void Tokenize_is_the_row_major_argmax_of_the_logits_of_mapped_pixels()
    {
        using var scope = NewDisposeScope();
        using var encoder = DalleEncoder.Create(Small, seed: 5);
        var pixels = rand(new long[] { 2, 3, 40, 32 }, generator: new Generator(23));
        var codes = encoder.Tokenize(pixels);
        Assert.Equal(ScalarType.Int64, codes.dtype);
        Assert.Equal(new long[] { 2, 5 * 4 }, codes.shape);
        using var noGrad = no_grad();
        var logits = encoder.Logits(DalleEncoder.MapPixels(pixels));
        Assert.Equal(new long[] { 2, 64, 5, 4 }, logits.shape);
        var values = logits.contiguous().data<float>().ToArray();
        var actual = codes.data<long>().ToArray();
        for (int b = 0; b < 2; b++)
        for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
        {
            int best = 0;
            for (int v = 1; v < 64; v++)
                if (values[((b * 64 + v) * 5 + i) * 4 + j] > values[((b * 64 + best) * 5 + i) * 4 + j]) best = v;
            Assert.Equal(best, actual[b * 20 + i * 4 + j]);
        }
        Assert.True(codes.unique().output.numel() > 1, "all positions got the same code");
        // Each image is tokenized on its own.
        Assert.Equal(actual[20..], encoder.Tokenize(pixels[1..]).data<long>().ToArray());
    }

    [Fact]
    public void Default_encoder_turns_a_112_pixel_view_into_a_14_by_14_grid_of_8192_codes()
    {
        using var scope = NewDisposeScope();
        var pixels = rand(new long[] { 1, 3, 112, 112 }, generator: new Generator(24));
        var watch = Stopwatch.StartNew();
        var codes = fixture.Encoder.Tokenize(pixels);
        output.WriteLine($"112×112 default-size tokenize: {watch.ElapsedMilliseconds} ms");
        Assert.Equal(new long[] { 1, 14 * 14 }, codes.shape);
        Assert.InRange(codes.min().item<long>(), 0, 8191);
        Assert.InRange(codes.max().item<long>(), 0, 8191);
        Assert.True(codes.unique().output.numel() > 1);
    }

    [Fact]
    public void A_state_dict_under_the_original_names_loads_strictly()
    {
        using var scope = NewDisposeScope();
        using var directory = new TemporaryDirectory();
        using var source = DalleEncoder.Create(Small, seed: 7);
        RandomizeBiases(source, new Generator(25));
        var writer = new SafetensorsWriter();
        foreach (var (name, value) in source.state_dict())
            writer.AddFloat32(name, value.shape, value.contiguous().data<float>().ToArray());
        writer.Write(directory.Combine("encoder.safetensors"));
        var partial = new SafetensorsWriter();
        foreach (var (name, value) in source.state_dict().Where(p => p.Key != "blocks.group_3.block_1.id_path.w"))
            partial.AddFloat32(name, value.shape, value.contiguous().data<float>().ToArray());
        partial.Write(directory.Combine("partial.safetensors"));

        using var target = DalleEncoder.Create(Small, seed: 8);
        using (var file = SafetensorsFile.Open(directory.Combine("encoder.safetensors"))) WeightLoader.LoadStrict(target, file);
        var pixels = DalleEncoder.MapPixels(rand(new long[] { 1, 3, 16, 16 }, generator: new Generator(26)));
        using var noGrad = no_grad();
        Assert.True(Same(source.Logits(pixels), target.Logits(pixels)));
        using var fresh = DalleEncoder.Create(Small, seed: 9);
        using var partialFile = SafetensorsFile.Open(directory.Combine("partial.safetensors"));
        var error = Assert.Throws<InvalidDataException>(() => WeightLoader.LoadStrict(fresh, partialFile));
        Assert.Contains("blocks.group_3.block_1.id_path.w", error.Message);
    }

    [Fact]
    public void Inputs_are_checked_as_the_original_checks_them()
    {
        using var scope = NewDisposeScope();
        using var encoder = DalleEncoder.Create(Small, seed: 1);
        using var noGrad = no_grad();
        Assert.Throws<ArgumentException>(() => encoder.Logits(zeros(3, 16, 16)));
        Assert.Throws<ArgumentException>(() => encoder.Logits(zeros(1, 4, 16, 16)));
        Assert.Throws<ArgumentException>(() => encoder.Logits(zeros(new long[] { 1, 3, 16, 16 }, dtype: float64)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DalleEncoder(Small with { HiddenSize = 18 }));
        Assert.Equal(8, Small.LayerCount);
        Assert.Equal(1.0 / 64, Small.PostGain);
        Assert.Equal(8, Small.Downsampling);
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static void RandomizeBiases(nn.Module module, Generator generator)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in module.named_parameters())
            if (name.EndsWith(".b", StringComparison.Ordinal)) parameter.normal_(0, 0.1, generator);
    }

    private static Dictionary<string, (double[] Values, long[] Shape)> Weights(nn.Module module, string prefix) =>
        module.state_dict().ToDictionary(p => prefix + p.Key, p => (p.Value.to(float64).contiguous().data<double>().ToArray(), p.Value.shape));

    private static IEnumerable<Map> Batch(Tensor x)
    {
        var values = x.to(float64).contiguous().data<double>().ToArray();
        int c = (int)x.shape[1], h = (int)x.shape[2], w = (int)x.shape[3], size = c * h * w;
        for (int b = 0; b < x.shape[0]; b++) yield return new Map(c, h, w, values[(b * size)..((b + 1) * size)]);
    }

    private static double RelativeL2(Tensor actual, IReadOnlyList<Map> expected)
    {
        var values = actual.to(float64).contiguous().data<double>().ToArray();
        var reference = expected.SelectMany(m => m.V).ToArray();
        Assert.Equal(reference.Length, values.Length);
        double diff = 0, norm = 0;
        for (int i = 0; i < values.Length; i++)
        {
            diff += (values[i] - reference[i]) * (values[i] - reference[i]);
            norm += reference[i] * reference[i];
        }
        return Math.Sqrt(diff / norm);
    }

    /// <summary>One image [C, H, W], row-major, float64.</summary>
    private sealed record Map(int C, int H, int W, double[] V);

    /// <summary>
    /// A plain-loop float64 transcription of dall_e/encoder.py and utils.Conv2d, reading weights by their original
    /// state-dict names: no TorchSharp convolution, pooling or ReLU involved.
    /// </summary>
    private sealed class Reference(Dictionary<string, (double[] Values, long[] Shape)> weights, int layerCount)
    {
        public Map Encoder(Map x, int groups, int blocksPerGroup)
        {
            x = Conv(x, "blocks.input");
            for (int g = 1; g <= groups; g++)
            {
                for (int b = 1; b <= blocksPerGroup; b++) x = Block(x, $"blocks.group_{g}.block_{b}.");
                if (g < groups) x = MaxPool2(x);
            }
            return Conv(Relu(x), "blocks.output.conv");
        }

        public Map Block(Map x, string prefix)
        {
            var id = weights.ContainsKey(prefix + "id_path.w") ? Conv(x, prefix + "id_path") : x;
            var r = Conv(Relu(x), prefix + "res_path.conv_1");
            r = Conv(Relu(r), prefix + "res_path.conv_2");
            r = Conv(Relu(r), prefix + "res_path.conv_3");
            r = Conv(Relu(r), prefix + "res_path.conv_4");
            double gain = 1.0 / (layerCount * layerCount);
            return x with { C = r.C, V = id.V.Zip(r.V, (a, b) => a + gain * b).ToArray() };
        }

        private Map Conv(Map x, string name)
        {
            var (w, shape) = weights[name + ".w"];
            var bias = weights[name + ".b"].Values;
            int outC = (int)shape[0], inC = (int)shape[1], k = (int)shape[2], pad = (k - 1) / 2;
            Assert.Equal(x.C, inC);
            var y = new double[outC * x.H * x.W];
            for (int o = 0; o < outC; o++)
            for (int r = 0; r < x.H; r++)
            for (int c = 0; c < x.W; c++)
            {
                double sum = bias[o];
                for (int i = 0; i < inC; i++)
                for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                {
                    int sr = r + ky - pad, sc = c + kx - pad;
                    if (sr < 0 || sr >= x.H || sc < 0 || sc >= x.W) continue;
                    sum += w[((o * inC + i) * k + ky) * k + kx] * x.V[(i * x.H + sr) * x.W + sc];
                }
                y[(o * x.H + r) * x.W + c] = sum;
            }
            return new Map(outC, x.H, x.W, y);
        }

        private static Map Relu(Map x) => x with { V = x.V.Select(v => Math.Max(v, 0)).ToArray() };

        private static Map MaxPool2(Map x)
        {
            int h = x.H / 2, w = x.W / 2;
            var y = new double[x.C * h * w];
            for (int c = 0; c < x.C; c++)
            for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++)
            {
                double best = double.NegativeInfinity;
                for (int dr = 0; dr < 2; dr++)
                for (int dq = 0; dq < 2; dq++)
                    best = Math.Max(best, x.V[(c * x.H + 2 * r + dr) * x.W + 2 * q + dq]);
                y[(c * h + r) * w + q] = best;
            }
            return new Map(x.C, h, w, y);
        }
    }
}
