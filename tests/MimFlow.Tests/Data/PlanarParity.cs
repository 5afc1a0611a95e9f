using MimFlow.Data.Augment;

namespace MimFlow.Tests.Data;

/// <summary>The planar kernels against the interleaved code they replaced: the same op on both layouts, the same bytes.</summary>
internal static class PlanarParity
{
    public static void AssertSameBytes(PixelOp op, byte[] rgb, int width, int height)
    {
        byte[] interleaved = (byte[])rgb.Clone();
        op.Apply(new RgbImage(interleaved, width, height));
        var image = new PlanarImage(new byte[rgb.Length], width, height);
        image.FromInterleaved(rgb);
        op.Apply(image);
        byte[] back = new byte[rgb.Length];
        image.ToInterleaved(back);
        Assert.True(interleaved.AsSpan().SequenceEqual(back), $"{op} on {width}×{height}: planar differs");
    }
}
