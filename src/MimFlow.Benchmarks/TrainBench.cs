using MimFlow.Training.Benchmarks;

namespace MimFlow.Benchmarks;

/// <summary>What <c>mimflow bench train</c> runs: the training step, and its PyTorch peer in the same invocation.</summary>
public sealed record TrainBenchRequest
{
    public TrainStepRequest Step { get; init; } = new();

    /// <summary><c>peer_beit_step.py</c>, run after the step at the same batch size; null: no peer.</summary>
    public string? Peer { get; init; }

    /// <summary>Python with torch and timm for the peer.</summary>
    public string Python { get; init; } = "python3";
}

/// <param name="Peer">The peer's lines (one per mode); empty without a peer.</param>
public sealed record TrainBenchResult(TrainStepResult Ours, IReadOnlyList<PeerStep> Peer);

/// <summary>The training step (<see cref="TrainStepBenchmark"/>) and then, with <see cref="TrainBenchRequest.Peer"/>, the peer on the same batch size.</summary>
public static class TrainBench
{
    public static async Task<TrainBenchResult> RunAsync(TrainBenchRequest request, CancellationToken cancellationToken = default)
    {
        var ours = TrainStepBenchmark.Run(request.Step, cancellationToken);
        var peer = request.Peer is { } script ? await Peers.TrainStepAsync(request.Python, script, request.Step.BatchSize, cancellationToken) : [];
        return new TrainBenchResult(ours, peer);
    }
}
