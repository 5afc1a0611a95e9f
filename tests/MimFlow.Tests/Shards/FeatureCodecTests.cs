using MimFlow.Shards;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Tests.Shards;

public sealed class FeatureCodecTests
{
    public FeatureCodecTests() => TorchBackend.EnsureLoaded();

    [Theory]
    [InlineData(FeatureEncoding.Fp16)]
    [InlineData(FeatureEncoding.Int8)]
    public void Stored_features_decode_to_within_the_encodings_resolution(FeatureEncoding encoding)
    {
        using var scope = NewDisposeScope();
        const int rows = 3, tokens = 5, dim = 8;
        var features = randn(rows, tokens, dim, generator: new Generator(4)) * tensor(new float[] { 0.01f, 1f, 30f, 0f, 2f }).reshape(1, tokens, 1);
        var encoded = FeatureCodec.Encode(features, encoding);
        Assert.Equal(rows, encoded.Length);
        var expected = features.data<float>().ToArray();
        for (int r = 0; r < rows; r++)
        {
            var (values, scales) = encoded[r];
            Assert.Equal(encoding == FeatureEncoding.Fp16 ? tokens * dim * 2 : tokens * dim, values.Length);
            Assert.Equal(encoding == FeatureEncoding.Int8 ? tokens * 2 : 0, scales?.Length ?? 0);
            var decoded = new float[tokens * dim];
            FeatureCodec.Decode(values, scales, decoded);
            for (int t = 0; t < tokens; t++)
            {
                var token = expected.AsSpan((r * tokens + t) * dim, dim);
                double largest = 0;
                foreach (float v in token) largest = Math.Max(largest, Math.Abs(v));
                // int8: half a quantisation step (max|x| / 127 / 2, plus the fp16 rounding of the scale); fp16: its relative precision.
                double tolerance = encoding == FeatureEncoding.Int8 ? largest / 127 * 0.51 + 1e-6 : largest * 1e-3 + 1e-7;
                for (int d = 0; d < dim; d++) Assert.True(Math.Abs(decoded[t * dim + d] - token[d]) <= tolerance, $"row {r} token {t}: {decoded[t * dim + d]} vs {token[d]}");
            }
        }
    }

    [Fact]
    public void A_row_of_the_wrong_length_is_refused_rather_than_read_past()
    {
        var target = new float[16];
        Assert.Throws<InvalidDataException>(() => FeatureCodec.Decode(new byte[30], [], target));
        Assert.Throws<InvalidDataException>(() => FeatureCodec.Decode(new byte[16], new byte[6], target));
    }
}
