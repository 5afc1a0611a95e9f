using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Masking;
using MimFlow.Data.Pipeline;
using MimFlow.Precompute.Shards;
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

    [Fact]
    public async Task Without_stored_images_the_feeder_replays_the_recorded_view_exactly_on_the_originals()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { StoreImageMaxSide = null, Views = 1 });
        Assert.Throws<ArgumentException>(() => new ShardFeeder(shards, Options()));
        var feeder = new ShardFeeder(shards, Options() with { DataRoot = fixture.Data });
        var rows = new Dictionary<string, ShardRow>();
        foreach (var shard in feeder.Manifest.Shards)
            await foreach (var row in ShardReader.ReadAsync(Path.Combine(shards, shard.Name))) rows[row.SampleId] = row;

        foreach (var batch in await Epoch(feeder, 0))
            for (int r = 0; r < batch.Count; r++)
            {
                var row = rows[batch.SampleIds[r]];
                byte[] bytes = File.ReadAllBytes(Path.Combine(fixture.Data, row.Path));
                var parameters = AugmentParams.FromJson(row.Augment);
                var planar = new byte[3 * 32 * 32];
                Augmenter.Render(bytes, ImageHeader.Read(bytes, DecodeLimits.Default), AugmentParams.Of(parameters.Views[0]), [new ViewShape(32, 32)], [planar]);
                var expected = new float[planar.Length];
                PixelNormalizer.ToFloat(planar, expected, imageNetStatistics: true);
                Assert.Equal(expected, batch.Pixels.AsSpan(r * planar.Length, planar.Length).ToArray());
                Assert.Equal(row.Codes!.Select(c => (long)c), batch.Codes.AsSpan(r * 16, 16).ToArray());
                Assert.Equal(row.Label, batch.Labels[r]);
            }
    }
}
