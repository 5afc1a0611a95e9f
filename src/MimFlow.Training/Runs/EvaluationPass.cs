using MimFlow.Data.Augment;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>
/// One pass of a model over a labelled split without gradients, as every evaluation runs it: listing order, full and
/// partial batches, float32 views; the model in eval mode for the pass and back in training mode after if it was.
/// </summary>
public static class EvaluationPass
{
    /// <param name="expectedClasses">The model's outputs: the split must have as many classes.</param>
    public static void RequireClasses(SampleIndex data, int expectedClasses, string what)
    {
        if (data.Classes.Count != expectedClasses) throw new ArgumentException($"{data.Root}: {data.Classes.Count} classes, but {what} {expectedClasses}");
        if (data.Count == 0) throw new ArgumentException($"{data.Root}: no images to evaluate");
    }

    /// <param name="score">Scores one batch; it runs inside its own dispose scope and no-grad mode, with no await inside
    /// (scopes and grad mode are per thread).</param>
    /// <param name="progress">Images scored so far, after each batch (of <c>data.Count</c>, less the quarantined).</param>
    /// <returns>The inputs the loader refused (quarantined).</returns>
    public static async Task<int> RunAsync(nn.Module model, SampleIndex data, IAugmentRecipe recipe, int batchSize, int decodeWorkers, Action<Batch> score,
        CancellationToken cancellationToken, IProgress<int>? progress = null)
    {
        int scored = 0;
        var loader = new DataflowLoader(data, recipe, new LoaderOptions
        {
            BatchSize = batchSize, Shuffle = false, KeepPartialBatch = true, DecodeWorkers = decodeWorkers,
            ReadConcurrency = Math.Max(2, decodeWorkers), Format = PixelFormat.Float32,
        });
        bool wasTraining = model.training;
        model.eval();
        try
        {
            await foreach (var batch in loader.ReadEpochAsync(cancellationToken))
                using (batch)
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    score(batch);
                    scored += batch.Count;
                    progress?.Report(scored);
                }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return loader.Quarantine.Count;
    }
}
