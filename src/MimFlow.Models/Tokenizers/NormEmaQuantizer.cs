using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MimFlow.Models.Tokenizers;

/// <summary>One quantisation: straight-through codes, indices and the commitment term.</summary>
public sealed record Quantized(Tensor Codes, Tensor Indices, Tensor CommitmentLoss);

/// <summary>
/// VQ-KD's quantiser (BEiT v2): inputs and the codebook (<c>embedding.weight</c>, K × d) are l2-normalised, the
/// nearest code is the one of largest cosine; the output passes gradients straight through to the input; while
/// training, each used code moves towards the normalised mean of the vectors assigned to it by an exponential moving
/// average (decay 0.99) and is renormalised, unused codes stay; <c>cluster_size</c> tracks usage by EMA.
/// </summary>
public sealed class NormEmaQuantizer : Module<Tensor, Quantized>
{
    [ComponentName(Name = "embedding")] private readonly Embedding embedding;
    [ComponentName(Name = "cluster_size")] private readonly Tensor clusterSize;
    private readonly double decay;
    private readonly double beta;

    public NormEmaQuantizer(int codes = 8192, int dim = 32, double decay = 0.99, double beta = 1.0) : base("NormEMAVectorQuantizer")
    {
        embedding = Embedding(codes, dim);
        using (no_grad())
        {
            embedding.weight!.copy_(functional.normalize(randn(codes, dim), p: 2, dim: -1));
            embedding.weight.requires_grad = false;
        }
        clusterSize = zeros(codes);
        register_buffer("cluster_size", clusterSize);
        this.decay = decay;
        this.beta = beta;
        RegisterComponents();
    }

    /// <summary>Redraws the codebook: unit vectors uniformly distributed on the sphere (normalised Gaussians), seeded.</summary>
    public void ResetCodebook(Generator generator)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var weight = embedding.weight!;
        weight.copy_(functional.normalize(randn(weight.shape, generator: generator), p: 2, dim: -1));
        clusterSize.zero_();
    }

    /// <summary>
    /// Restarts dead codes: every code whose usage EMA (<see cref="ClusterSize"/>) is below <paramref name="threshold"/>
    /// is set to one of <paramref name="vectors"/> (recent encoder outputs, [M, d], drawn at random) and its usage to
    /// the threshold, so the codebook does not collapse to a few entries. Returns how many were restarted.
    /// </summary>
    public int RestartDeadCodes(Tensor vectors, double threshold, Generator generator)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var dead = clusterSize.lt(threshold).nonzero().flatten();
        int count = (int)dead.shape[0];
        if (count == 0) return 0;
        var flat = functional.normalize(vectors.detach().reshape(-1, vectors.shape[^1]).to(embedding.weight!.dtype), p: 2, dim: -1);
        var picks = randint(0, flat.shape[0], [count], generator: generator).to(flat.device);
        embedding.weight!.index_copy_(0, dead, flat.index_select(0, picks));
        clusterSize.index_fill_(0, dead, threshold);
        return count;
    }

    public int Codes => (int)embedding.weight!.shape[0];

    public Tensor Codebook => embedding.weight!;

    /// <summary>Usage counts by EMA, one per code (for codebook-usage reports and dead-code restarts).</summary>
    public Tensor ClusterSize => clusterSize;

    /// <summary>
    /// Data-parallel training: sums a float tensor across the ranks in place. The EMA's code counts and sums are then
    /// the global batch's (as BEiT v2's quantizer all-reduces them), so every rank's codebook stays the same.
    /// </summary>
    public Action<Tensor>? StatisticsReducer { get; set; }

    /// <summary>argmax of cosine per row, a block of rows at a time so the [rows, K] similarities stay small.</summary>
    private static Tensor NearestCodes(Tensor flat, Tensor weight)
    {
        const int BlockRows = 512;
        if (flat.shape[0] <= BlockRows) return flat.matmul(weight.t()).argmax(1);
        using var codebook = weight.t();
        var blocks = new List<Tensor>();
        for (long start = 0; start < flat.shape[0]; start += BlockRows)
        {
            using var block = flat.narrow(0, start, Math.Min(BlockRows, flat.shape[0] - start));
            using var similarities = block.matmul(codebook);
            blocks.Add(similarities.argmax(1));
        }
        var indices = cat(blocks, 0);
        foreach (var block in blocks) block.Dispose();
        return indices;
    }

    /// <param name="z">[..., d] vectors to quantise.</param>
    public override Quantized forward(Tensor z)
    {
        using var scope = NewDisposeScope();
        var normalized = functional.normalize(z, p: 2, dim: -1);
        var flat = normalized.reshape(-1, normalized.shape[^1]);
        var weight = embedding.weight!;
        var indices = NearestCodes(flat, weight);
        var codes = weight.index_select(0, indices).view(normalized.shape);
        using (no_grad())
        {
            // Counts and sums by scatter, not a [tokens, K] one-hot: at 8192 codes that matrix is hundreds of MB a batch.
            var bins = indices.bincount(null, Codes).to(flat.dtype);
            Tensor? sums = training ? zeros([Codes, flat.shape[1]], flat.dtype, flat.device).index_add_(0, indices, flat, 1) : null;
            if (StatisticsReducer is { } reduce)
            {
                var both = (sums is null ? bins.unsqueeze(1) : cat([bins.unsqueeze(1), sums], 1)).contiguous();
                reduce(both);
                bins = both.select(1, 0);
                if (sums is not null) sums = both.narrow(1, 1, sums.shape[1]);
            }
            clusterSize.mul_(decay).add_(bins, alpha: 1 - decay);
            if (sums is not null)
            {
                var unused = bins.eq(0);
                var means = functional.normalize(sums / bins.masked_fill(unused, 1).unsqueeze(1), p: 2, dim: -1);
                var target = where(unused.unsqueeze(-1), weight, means);
                weight.mul_(decay).add_(target, alpha: 1 - decay);
                weight.copy_(functional.normalize(weight, p: 2, dim: -1));
            }
        }
        var loss = beta * functional.mse_loss(codes.detach(), normalized);
        var straightThrough = normalized + (codes - normalized).detach();
        return new Quantized(straightThrough.MoveToOuterDisposeScope(), indices.view(normalized.shape[..^1]).MoveToOuterDisposeScope(), loss.MoveToOuterDisposeScope());
    }
}
