using MimFlow.Models.Backbones;
using MimFlow.Models.Tokenizers;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Models;

public sealed class VqKdTests
{
    public VqKdTests() => TorchBackend.EnsureLoaded();

    [Fact]
    public void Quantizer_picks_the_code_of_largest_cosine_and_passes_gradients_straight_through()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(5);
        using var quantizer = new NormEmaQuantizer(codes: 64, dim: 8);
        quantizer.eval();
        var before = quantizer.Codebook.clone();
        var z = randn(10, 8).requires_grad_(true);
        var result = quantizer.forward(z);
        var cosines = nn.functional.normalize(z.detach(), p: 2, dim: -1).matmul(before.t());
        Assert.Equal(cosines.argmax(1).data<long>().ToArray(), result.Indices.data<long>().ToArray());
        Assert.True(allclose(result.Codes.detach(), before.index_select(0, result.Indices)));
        Assert.True(allclose(quantizer.Codebook, before), "evaluation must not move the codebook");
        (result.Codes * randn(10, 8)).sum().backward();
        Assert.True(z.grad is not null && z.grad.abs().sum().item<float>() > 0, "the straight-through estimator must pass gradients to the input");
    }

    [Fact]
    public void Training_moves_used_codes_towards_their_vectors_by_ema_and_keeps_them_unit_norm()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(6);
        using var quantizer = new NormEmaQuantizer(codes: 16, dim: 4, decay: 0.9);
        quantizer.train();
        var before = quantizer.Codebook.clone();
        var direction = nn.functional.normalize(randn(1, 4), p: 2, dim: -1);
        var batch = direction.expand(32, 4) + 0.01 * randn(32, 4);
        var used = quantizer.forward(batch).Indices.unique().output.data<long>().ToArray();
        var after = quantizer.Codebook;
        Assert.True(allclose(after.norm(1), ones(16), 1e-5, 1e-5));
        foreach (long code in used)
        {
            double cosBefore = before[code].dot(direction[0]).item<float>(), cosAfter = after[code].dot(direction[0]).item<float>();
            Assert.True(cosAfter > cosBefore, $"code {code}: cosine {cosBefore:F3} → {cosAfter:F3}");
        }
        for (long code = 0; code < 16; code++)
            if (!used.Contains(code)) Assert.True(allclose(after[code], before[code]), $"unused code {code} moved");
        Assert.True(quantizer.ClusterSize.sum().item<float>() > 0);
    }

    [Fact]
    public void Vqkd_tokenizes_every_patch_and_trains_the_encoder_through_the_codebook()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(7);
        var encoder = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 2, NumHeads = 2 };
        using var tokenizer = new VqKd(new VqKdConfig(encoder, Codes: 128, CodeDim: 8, DecoderDepth: 1, TeacherDim: 24));
        var pixels = randn(3, 3, 32, 32);
        tokenizer.eval();
        using (no_grad())
        {
            var codes = tokenizer.Tokenize(pixels);
            Assert.Equal(new long[] { 3, 16 }, codes.shape);
            Assert.InRange(codes.max().item<long>(), 0, 127);
        }
        tokenizer.train();
        var (reconstruction, quantized) = tokenizer.forward(pixels);
        Assert.Equal(new long[] { 3, 16, 24 }, reconstruction.shape);
        var loss = VqKd.Loss(reconstruction, randn(3, 16, 24), quantized);
        Assert.True(float.IsFinite(loss.item<float>()));
        loss.backward();
        var patchWeight = tokenizer.named_parameters().Single(p => p.name == "encoder.patch_embed.proj.weight").parameter;
        Assert.True(patchWeight.grad is not null && patchWeight.grad.abs().sum().item<float>() > 0);
        var names = tokenizer.state_dict().Keys.ToList();
        foreach (string name in new[] { "quantize.embedding.weight", "encode_task_layer.2.weight", "decode_task_layer.2.bias", "decoder.blocks.0.attn.qkv.weight" })
            Assert.Contains(name, names);
    }
}
