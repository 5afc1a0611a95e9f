using MimFlow.Data.Sources;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Feeding;

namespace MimFlow.Tests.Training;

public sealed class FeederTests
{
    private static async Task<List<TrainingBatch>> Epoch(ShardFeeder feeder, int epoch, long skip = 0)
    {
        var batches = new List<TrainingBatch>();
        await foreach (var batch in feeder.ReadEpochAsync(epoch, skip)) batches.Add(batch);
        return batches;
    }

    private static FeederOptions Options(int workers = 2) => new()
    {
        BatchSize = 3, Seed = 5, ShuffleBuffer = 4, DecodeWorkers = workers, Masks = new BlockwiseMaskGenerator(4, 4, MaskedPatches: 6, MinBlockPatches: 2),
    };

    [Fact]
    public async Task An_epoch_reads_every_image_once_in_one_view_the_same_way_on_every_run()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards));
        var feeder = new ShardFeeder(shards, Options());
        Assert.Equal(12, feeder.Images);
        Assert.Equal(4, feeder.BatchesPerEpoch);

        var first = await Epoch(feeder, 0);
        Assert.Equal(4, first.Count);
        Assert.Equal(12, first.SelectMany(b => b.SampleIds).Distinct().Count());
        Assert.Equal(Enumerable.Range(0, 4).Select(i => (long)i), first.Select(b => b.Number));
        Assert.All(first, b => Assert.Equal(3 * 3 * 32 * 32, b.Pixels.Length));
        Assert.All(first, b => Assert.Equal(16 * 24 * 3, b.Features.Length));
        Assert.All(first, b => Assert.All(Enumerable.Range(0, 3), r => Assert.Equal(6, b.Masks.AsSpan(r * 16, 16).ToArray().Count(m => m == 1))));

        var again = await Epoch(new ShardFeeder(shards, Options(workers: 1)), 0);
        for (int i = 0; i < first.Count; i++)
        {
            Assert.Equal(first[i].SampleIds, again[i].SampleIds);
            Assert.Equal(first[i].Pixels, again[i].Pixels);
            Assert.Equal(first[i].Masks, again[i].Masks);
            Assert.Equal(first[i].Codes, again[i].Codes);
        }
        var next = await Epoch(feeder, 1);
        Assert.NotEqual(first.SelectMany(b => b.SampleIds), next.SelectMany(b => b.SampleIds));
        Assert.Equal(first.SelectMany(b => b.SampleIds).Order(), next.SelectMany(b => b.SampleIds).Order());

        var resumed = await Epoch(feeder, 0, skip: 2);
        Assert.Equal([2L, 3L], resumed.Select(b => b.Number));
        Assert.Equal(first[2].Pixels, resumed[0].Pixels);
        Assert.Equal(first[3].Codes, resumed[1].Codes);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Batches_handed_back_are_filled_again_whole_and_the_epoch_reads_the_same(bool masks)
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 12);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards));
        var options = masks ? Options() : Options() with { Masks = null };
        var keeper = new ShardFeeder(shards, options);
        List<TrainingBatch>[] kept = [await Epoch(keeper, 0), await Epoch(keeper, 1)];

        // Epoch 0 hands every batch back, so epoch 1 is built from them.
        var feeder = new ShardFeeder(shards, options);
        var seen = new HashSet<TrainingBatch>(ReferenceEqualityComparer.Instance);
        int reused = 0;
        for (int epoch = 0; epoch < 2; epoch++)
        {
            int count = 0;
            await foreach (var batch in feeder.ReadEpochAsync(epoch))
            {
                using (batch)
                {
                    if (!seen.Add(batch)) reused++;
                    var reference = kept[epoch][count++];
                    Assert.Equal(reference.Number, batch.Number);
                    Assert.Equal(reference.SampleIds, batch.SampleIds);
                    Assert.Equal(reference.Pixels, batch.Pixels);
                    Assert.Equal(reference.Masks, batch.Masks);
                    Assert.Equal(reference.Codes, batch.Codes);
                    Assert.Equal(reference.Features, batch.Features);
                    Assert.Equal(reference.Labels, batch.Labels);
                    // What the consumer leaves in a batch it hands back must never reach a later batch.
                    batch.Pixels.AsSpan().Fill(float.NaN);
                    batch.Masks.AsSpan().Fill(7);
                    batch.Codes.AsSpan().Fill(-1);
                    batch.Features.AsSpan().Fill(float.NaN);
                    batch.Labels.AsSpan().Fill(-5);
                }
            }
            Assert.Equal(kept[epoch].Count, count);
        }
        Assert.True(reused >= kept[1].Count, $"{reused} batches were filled again");
        Assert.All(kept[0], b => Assert.Contains(b.Masks, m => m == (masks ? 1 : 0)));
        Assert.All(kept[0], b => Assert.DoesNotContain(b.Masks, m => m > (masks ? 1 : 0)));
    }

    [Theory]
    [InlineData("imagenet")]
    [InlineData("wds")]
    [InlineData("hf-parquet")]
    public async Task Without_stored_images_the_feeder_replays_each_rows_view_on_the_originals_as_the_data_pipeline_rendered_it(string layoutName)
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        var layout = DatasetLayouts.Parse(layoutName);
        string data = fixture.Data;
        if (layout != DatasetLayout.ImageNet)
        {
            data = fixture.Combine("packed");
            await MimFlow.Data.Packing.DatasetPacker.PackAsync(new MimFlow.Data.Packing.PackRequest
            {
                From = fixture.Data, Format = layout == DatasetLayout.Wds ? MimFlow.Data.Packing.PackFormat.Wds : MimFlow.Data.Packing.PackFormat.HfParquet,
                OutputDirectory = data, ShardBytes = 4_000,
            });
        }
        var originals = DatasetSource.Open(data, layout);
        string shards = fixture.Combine("shards");
        var request = fixture.Request(shards) with { StoreImageMaxSide = null, Views = 1, DataRoot = data, Layout = layout };
        await TokenizeJob.RunAsync(request);
        Assert.Contains("--data", Assert.Throws<ArgumentException>(() => new ShardFeeder(shards, Options())).Message);
        var feeder = new ShardFeeder(shards, Options() with { Originals = originals });

        // The data pipeline's own rendering of the tokenized views: the tokenize recipe, seed and order, float32 batches.
        var rendered = new Dictionary<string, (float[] Pixels, int Label)>();
        var loader = new DataflowLoader(originals, new RepeatedDraws(new PretrainRecipe(32, null), 1), new LoaderOptions
        {
            BatchSize = 2, Seed = request.Seed, Epoch = 0, Format = PixelFormat.Float32, Shuffle = false, DecodeWorkers = 2,
        });
        await foreach (var batch in loader.ReadEpochAsync())
            using (batch)
                for (int r = 0; r < batch.Count; r++)
                    rendered[TokenizeJob.SampleId(batch.Samples[r].RelativePath)] = (batch.ViewFloats(0).Slice(r * 3 * 32 * 32, 3 * 32 * 32).ToArray(), batch.Labels[r]);

        int compared = 0;
        foreach (var batch in await Epoch(feeder, 0))
            for (int r = 0; r < batch.Count; r++, compared++)
            {
                var (pixels, label) = rendered[batch.SampleIds[r]];
                Assert.Equal(pixels, batch.Pixels.AsSpan(r * pixels.Length, pixels.Length).ToArray());
                Assert.Equal(label, batch.Labels[r]);
            }
        Assert.Equal(6, compared);
    }
}
