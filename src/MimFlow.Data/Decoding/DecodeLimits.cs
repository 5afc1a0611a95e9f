namespace MimFlow.Data.Decoding;

/// <summary>Refusals made from the header, before any pixel is decoded.</summary>
/// <param name="MaxPixels">Width × height above which an image is refused as a decompression bomb (default 100 MP).</param>
/// <param name="MaxFileBytes">Files larger than this are refused before reading (default 256 MiB).</param>
public sealed record DecodeLimits(long MaxPixels = 100_000_000, long MaxFileBytes = 256L << 20)
{
    public static DecodeLimits Default { get; } = new();
}
