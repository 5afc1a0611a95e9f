using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>
/// One named scalar of an objective. Loss terms stay attached to the graph, so a test or a trainer can back-propagate
/// a single term; diagnostics (accuracies) are computed without gradients.
/// </summary>
public sealed record LossTerm(string Name, Tensor Value);

/// <summary>
/// What an objective returns for one batch: the total to back-propagate, the weighted terms it is the sum of, and
/// diagnostics, each named as the papers' training logs name them, for metrics.jsonl.
/// </summary>
public sealed record ObjectiveLoss(Tensor Total, IReadOnlyList<LossTerm> Terms, IReadOnlyList<LossTerm> Diagnostics) : IDisposable
{
    /// <summary>
    /// The items every term and diagnostic averages over (masked patches, images): data-parallel training weighs each
    /// rank's means by it, so the global loss is the mean over the global batch's items, not a mean of the ranks' means.
    /// Null: the batch's images.
    /// </summary>
    public long? Items { get; init; }

    /// <summary>
    /// The metrics line's values, read from the device in one transfer (one synchronisation per step): "loss", each
    /// term as "loss_NAME", each diagnostic under its own name (an accuracy is not a loss, and is not plotted as one).
    /// </summary>
    public IReadOnlyDictionary<string, double> ToMetrics()
    {
        var named = Terms.Select(t => t with { Name = "loss_" + t.Name }).Concat(Diagnostics).Prepend(new LossTerm("loss", Total)).ToList();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var values = cat(named.Select(term => term.Value.detach().to(ScalarType.Float64).reshape(1)).ToArray())
            .cpu().data<double>().ToArray();
        var metrics = new Dictionary<string, double>(named.Count);
        for (int i = 0; i < named.Count; i++) metrics[named[i].Name] = values[i];
        return metrics;
    }

    /// <summary>Moves every tensor of the record out of the current dispose scope (objectives compute inside one).</summary>
    public ObjectiveLoss MoveToOuterDisposeScope()
    {
        Total.MoveToOuterDisposeScope();
        foreach (var term in Terms.Concat(Diagnostics)) term.Value.MoveToOuterDisposeScope();
        return this;
    }

    public void Dispose()
    {
        Total.Dispose();
        foreach (var term in Terms.Concat(Diagnostics)) term.Value.Dispose();
    }
}
