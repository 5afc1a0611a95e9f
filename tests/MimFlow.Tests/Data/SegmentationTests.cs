using MimFlow.Core.Randomness;
using MimFlow.Data.Augment;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Sources;
using MimFlow.Data.Sources.Layouts;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Data;

public sealed class SegmentationTests
{
    private static readonly ImageHeader Header = ImageHeader.Read(TestImages.Jpeg(400, 300), DecodeLimits.Default);

    [Fact]
    public void Rescale_and_crop_follow_mmseg_keep_ratio_resize_then_a_512_crop()
    {
        var recipe = new SegmentationRecipe();
        var labels = new LabelMap(Enumerable.Range(0, 400 * 300).Select(i => (byte)(1 + i % 400 / 100)).ToArray(), 400, 300);
        for (int i = 0; i < 300; i++)
        {
            var random = StableRandom.For(1, (ulong)i);
            var view = recipe.Draw(Header, labels, ref random).Views[0];
            double scale = view.Width / view.Crop.Width;
            // Keep-ratio resize: the 300-pixel short side maps to 512·r (r in 0.5..2) unless the long side limits it.
            Assert.InRange(scale * 300, 256 * 0.99, 1024 * 1.01);
            Assert.InRange(scale / (view.Height / view.Crop.Height), 0.99, 1.01);
            Assert.True(view.Width <= 512 && view.Height <= 512);
            Assert.InRange(view.Crop.X, -1e-9, 400 - view.Crop.Width + 1e-6);
            Assert.InRange(view.Crop.Y, -1e-9, 300 - view.Crop.Height + 1e-6);
            Assert.IsType<PhotometricShift>(Assert.Single(view.Ops));
        }
    }

    [Fact]
    public void Crops_that_one_class_dominates_are_redrawn()
    {
        // Left quarter class 1, the rest class 2: crops within the right part are 100% class 2.
        var labels = new LabelMap(Enumerable.Range(0, 400 * 300).Select(i => (byte)(i % 400 < 100 ? 1 : 2)).ToArray(), 400, 300);
        var strict = new SegmentationRecipe(CropSize: 64, LongScale: 400, ShortScale: 300, MinRatio: 1, MaxRatio: 1);
        var lax = strict with { CatMaxRatio = 1.0 };
        int balancedStrict = 0, balancedLax = 0;
        for (int i = 0; i < 300; i++)
        {
            var a = StableRandom.For(2, (ulong)i);
            var b = StableRandom.For(2, (ulong)i);
            if (strict.Draw(Header, labels, ref a).Views[0].Crop.X < 100) balancedStrict++;
            if (lax.Draw(Header, labels, ref b).Views[0].Crop.X < 100) balancedLax++;
        }
        Assert.True(balancedStrict > balancedLax * 2, $"strict {balancedStrict} vs lax {balancedLax}");
    }

    [Fact]
    public async Task Ade20k_batches_pair_512_views_with_reduced_label_maps_padded_with_255()
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.Ade20k, OutputDirectory = dir.Path, Images = 6, MinSide = 96, MaxSide = 160, ValidationFraction = 0 });
        var index = DatasetSource.Open(dir.Path, DatasetLayout.Ade20k);
        // A short scale of 64 keeps rescaled images below the 160 crop, so every sample is padded.
        var recipe = new SegmentationRecipe(CropSize: 160, LongScale: 256, ShortScale: 64);
        int rows = 0;
        await foreach (var batch in new DataflowLoader(index, recipe, new LoaderOptions { BatchSize = 3, Seed = 4, Format = PixelFormat.UInt8 }).ReadEpochAsync())
        {
            using (batch)
            {
                Assert.Equal(160 * 160, batch.LabelMapCells);
                for (int row = 0; row < batch.Count; row++, rows++)
                {
                    var view = batch.Params[row].Views[0];
                    byte[] image = await index.ReadImageAsync(batch.Samples[row]);
                    byte[] annotation = (await index.ReadAnnotationAsync(batch.Samples[row]))!;
                    var map = batch.LabelMap(row);
                    Assert.All(map.ToArray(), v => Assert.True(v < Ade20kLayout.ClassCount || v == SegmentationRecipe.Ignore));
                    Assert.True(view.Width < 160 || view.Height < 160);
                    Assert.Equal(SegmentationRecipe.Ignore, map[160 * 160 - 1]);
                    Assert.Equal(0, batch.ViewBytes(0)[row * 3 * 160 * 160 + 160 * 160 - 1]);
                    Assert.Contains(map.ToArray(), v => v != SegmentationRecipe.Ignore);

                    var labels = AnnotationCheck.Decode(annotation, ImageHeader.Read(image, DecodeLimits.Default));
                    byte[] replayed = new byte[160 * 160];
                    recipe.RenderLabels(labels, batch.Params[row], replayed);
                    Assert.Equal(map.ToArray(), replayed);
                }
            }
        }
        Assert.Equal(6, rows);
    }

    [Fact]
    public void The_vectorised_hsv_steps_give_the_interleaved_codes_bytes_on_every_kind_of_pixel()
    {
        // PhotometricShift's HSV step and ColorJitter's hue (PIL's HSV). A 16-level cube of colours (greys, ties of the maximum, black, white), then random pixels; odd length so
        // the scalar tail runs too.
        var pixels = new List<byte>();
        for (int r = 0; r < 256; r += 17)
            for (int g = 0; g < 256; g += 17)
                for (int b = 0; b < 256; b += 17) pixels.AddRange([(byte)r, (byte)g, (byte)b]);
        var random = new Random(5);
        for (int i = 0; i < 60_001; i++) pixels.AddRange([(byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)]);
        byte[] rgb = pixels.ToArray();
        int w = rgb.Length / 3;
        PhotometricShift[] shifts =
        [
            new(null, null, false, 0.5, null), new(null, null, false, 1.5, null), new(null, null, false, 1.0, null),
            new(null, null, false, null, -36), new(null, null, false, null, 34), new(null, null, false, null, 0),
            new(null, null, false, 0.73, -18), new(null, null, false, 1.31, 2), new(-7.5, 1.2, true, 1.1, 36),
        ];
        foreach (PixelOp shift in shifts.Concat<PixelOp>([new Hue(0.1), new Hue(-0.1), new Hue(0.5), new Hue(-0.5), new Hue(0.0371), new Hue(0)]))
            PlanarParity.AssertSameBytes(shift, rgb, w, 1);
    }

    [Fact]
    public void Label_maps_render_as_the_per_pixel_nearest_neighbour_code_did()
    {
        var random = new Random(3);
        var labels = new LabelMap(Enumerable.Range(0, 413 * 297).Select(_ => (byte)random.Next(0, 151)).ToArray(), 413, 297);
        var header = ImageHeader.Read(TestImages.Jpeg(413, 297), DecodeLimits.Default);
        foreach (var recipe in new[] { new SegmentationRecipe(CropSize: 256, LongScale: 1024, ShortScale: 256), new SegmentationRecipe(CropSize: 256, LongScale: 1024, ShortScale: 256, ReduceZeroLabel: false) })
            for (int i = 0; i < 60; i++)
            {
                var state = StableRandom.For(8, (ulong)i);
                var parameters = recipe.Draw(header, labels, ref state);
                byte[] rendered = new byte[256 * 256];
                recipe.RenderLabels(labels, parameters, rendered);
                Assert.Equal(ReferenceLabels(recipe, labels, parameters.Views[0]), rendered);
            }
    }

    /// <summary>The label rendering as first written: every output pixel's source computed on its own.</summary>
    private static byte[] ReferenceLabels(SegmentationRecipe recipe, LabelMap labels, ViewParams view)
    {
        byte[] target = new byte[recipe.CropSize * recipe.CropSize];
        Array.Fill(target, SegmentationRecipe.Ignore);
        for (int y = 0; y < view.Height; y++)
        {
            int sourceY = Math.Clamp((int)Math.Floor(view.Crop.Y + (y + 0.5) * view.Crop.Height / view.Height), 0, labels.Height - 1);
            for (int x = 0; x < view.Width; x++)
            {
                int outX = view.Flip ? view.Width - 1 - x : x;
                int sourceX = Math.Clamp((int)Math.Floor(view.Crop.X + (x + 0.5) * view.Crop.Width / view.Width), 0, labels.Width - 1);
                byte label = labels.Labels[sourceY * labels.Width + sourceX];
                target[y * recipe.CropSize + outX] = recipe.ReduceZeroLabel ? (label == 0 ? SegmentationRecipe.Ignore : (byte)(label - 1)) : label;
            }
        }
        return target;
    }
}
