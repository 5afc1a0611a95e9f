using System.Text.Json;
using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Data;

public sealed class RecipeTests
{
    private static readonly ImageHeader Header = ImageHeader.Read(TestImages.Jpeg(500, 375), DecodeLimits.Default);

    [Fact]
    public void Multi_crop_draws_two_global_and_ten_local_views_with_the_dino_recipe()
    {
        var recipe = new MultiCropRecipe();
        Assert.Equal(12, recipe.Views.Count);
        Assert.Equal(new ViewShape(224, 224), recipe.Views[0]);
        Assert.Equal(new ViewShape(96, 96), recipe.Views[11]);
        int draws = 1000, grey = 0, solarizedSecond = 0, blurredFirst = 0, blurredSecond = 0, blurredLocal = 0;
        double area = Header.Width * Header.Height;
        for (int i = 0; i < draws; i++)
        {
            var random = StableRandom.For(2, (ulong)i);
            var p = recipe.Draw(Header, ref random);
            Assert.Equal(12, p.Views.Count);
            grey += p.Views.Count(v => v.Ops.OfType<Grayscale>().Any());
            blurredFirst += p.Views[0].Ops.OfType<GaussianBlur>().Count();
            blurredSecond += p.Views[1].Ops.OfType<GaussianBlur>().Count();
            blurredLocal += p.Views.Skip(2).Count(v => v.Ops.OfType<GaussianBlur>().Any());
            solarizedSecond += p.Views[1].Ops.OfType<Solarize>().Count();
            Assert.DoesNotContain(p.Views.Where((_, v) => v != 1), v => v.Ops.OfType<Solarize>().Any());
            foreach (var view in p.Views.Where(v => v.Crop.Width < Header.Width && v.Crop.Height < Header.Height))
            {
                double share = view.Crop.Width * view.Crop.Height / area;
                if (view.Width == 224) Assert.InRange(share, 0.32 * 0.9, 1.0);
                else Assert.InRange(share, 0.05 * 0.9, 0.32 * 1.1);
            }
        }
        Assert.InRange(grey / (12.0 * draws), 0.17, 0.23);
        Assert.Equal(draws, blurredFirst);
        Assert.InRange(blurredSecond / (double)draws, 0.07, 0.13);
        Assert.InRange(blurredLocal / (10.0 * draws), 0.47, 0.53);
        Assert.InRange(solarizedSecond / (double)draws, 0.17, 0.23);
    }

    [Fact]
    public async Task Multi_crop_and_finetune_batches_replay_from_json_params()
    {
        using var dir = new TemporaryDirectory();
        var index = await TestImages.TrainingSet(dir.Path, 6, 2, 96, 200);
        var options = new LoaderOptions { BatchSize = 6, Seed = 8, DecodeWorkers = 2, Format = PixelFormat.UInt8 };
        foreach (IAugmentRecipe recipe in new IAugmentRecipe[] { new MultiCropRecipe(GlobalSize: 64, LocalSize: 32, LocalCrops: 4), new FinetuneRecipe(Size: 64) })
        {
            await foreach (var batch in new DataflowLoader(index, recipe, options).ReadEpochAsync())
            {
                using (batch)
                {
                    Assert.Equal(recipe.Views, batch.Views);
                    for (int row = 0; row < batch.Count; row++)
                    {
                        byte[] bytes = await index.ReadImageAsync(batch.Samples[row]);
                        var stored = JsonSerializer.Deserialize<AugmentParams>(JsonSerializer.Serialize(batch.Params[row]))!;
                        Assert.Equal(batch.Params[row].Views.SelectMany(v => v.Ops).Select(o => o.GetType()), stored.Views.SelectMany(v => v.Ops).Select(o => o.GetType()));
                        var outputs = batch.Views.Select(s => new byte[s.Bytes]).ToArray();
                        Augmenter.Render(bytes, ImageHeader.Read(bytes, DecodeLimits.Default), stored, batch.Views, outputs.Select(o => new Memory<byte>(o)).ToArray());
                        for (int v = 0; v < batch.Views.Count; v++)
                            Assert.Equal(batch.ViewBytes(v).Slice(row * outputs[v].Length, outputs[v].Length).ToArray(), outputs[v]);
                    }
                }
            }
        }
    }

    [Fact]
    public async Task Ibot_batches_carry_one_mask_per_global_crop()
    {
        using var dir = new TemporaryDirectory();
        var index = await TestImages.TrainingSet(dir.Path, 16, 2, 96, 128);
        var options = new LoaderOptions { BatchSize = 16, Seed = 3, Format = PixelFormat.UInt8, Masks = new MimFlow.Data.Masking.IbotMaskGenerator(4, 4), MaskedViews = 2 };
        var loader = new DataflowLoader(index, new MultiCropRecipe(GlobalSize: 64, LocalSize: 32, LocalCrops: 2), options);
        int differing = 0;
        await foreach (var batch in loader.ReadEpochAsync())
        {
            using (batch)
            {
                Assert.Equal(2, batch.MasksPerRow);
                for (int row = 0; row < batch.Count; row++)
                {
                    for (int v = 0; v < 2; v++)
                    {
                        byte[] expected = new byte[16];
                        loader.DrawMask(batch.Samples[row].Index, v)!.CopyTo(expected);
                        Assert.Equal(expected, batch.Mask(row, v).ToArray());
                    }
                    if (!batch.Mask(row, 0).SequenceEqual(batch.Mask(row, 1))) differing++;
                }
            }
        }
        Assert.True(differing > 4, "the two global crops draw their masks independently");
    }

    [Fact]
    public async Task Finetune_float_batches_carry_random_erasing_as_normal_noise_inside_the_box()
    {
        using var dir = new TemporaryDirectory();
        var index = await TestImages.TrainingSet(dir.Path, 40, 2, 64, 96);
        var recipe = new FinetuneRecipe(Size: 48) { Erasing = new RandomErasing(Probability: 1.0) };
        int checkedBoxes = 0;
        await foreach (var batch in new DataflowLoader(index, recipe, new LoaderOptions { BatchSize = 8, Seed = 1, Format = PixelFormat.Float32 }).ReadEpochAsync())
        {
            using (batch)
            {
                var floats = batch.ViewFloats(0);
                int plane = 48 * 48, length = 3 * plane;
                for (int row = 0; row < batch.Count; row++)
                {
                    var box = Assert.Single(batch.Params[row].Erase);
                    var values = new List<float>();
                    for (int y = box.Y; y < box.Y + box.Height; y++)
                        for (int x = box.X; x < box.X + box.Width; x++) values.Add(floats[row * length + y * 48 + x]);
                    if (values.Count < 100) continue;
                    double mean = values.Average(), variance = values.Average(v => (v - mean) * (v - mean));
                    Assert.InRange(mean, -0.35, 0.35);
                    Assert.InRange(variance, 0.6, 1.4);
                    checkedBoxes++;
                }
            }
        }
        Assert.True(checkedBoxes >= 10, $"only {checkedBoxes} boxes large enough to test");
    }
}
