namespace MimFlow.Data.Decoding;

/// <summary>Refusals made from the header, before any pixel is decoded.</summary>
/// <param name="MaxPixels">Width × height above which an image is refused as a decompression bomb (default 100 MP).</param>
/// <param name="MaxFileBytes">Files larger than this are refused before reading (default 256 MiB).</param>
/// <param name="MaxDecodedBytes">
/// Width × height × bands × bytes per sample above which an image is refused (default 2 GiB): the pixel limit alone
/// lets a 100 MP image of many float bands through, which decodes to gigabytes.
/// </param>
public sealed record DecodeLimits(long MaxPixels = 100_000_000, long MaxFileBytes = 256L << 20, long MaxDecodedBytes = 2L << 30)
{
    // A limit of zero or below would refuse every image as a bomb; it is a caller's mistake, not a policy.
    public long MaxPixels { get; init; } = MaxPixels >= 1 ? MaxPixels : throw new ArgumentOutOfRangeException(nameof(MaxPixels), MaxPixels, "must be at least 1");
    public long MaxFileBytes { get; init; } = MaxFileBytes >= 1 ? MaxFileBytes : throw new ArgumentOutOfRangeException(nameof(MaxFileBytes), MaxFileBytes, "must be at least 1");
    public long MaxDecodedBytes { get; init; } = MaxDecodedBytes >= 1 ? MaxDecodedBytes : throw new ArgumentOutOfRangeException(nameof(MaxDecodedBytes), MaxDecodedBytes, "must be at least 1");

    public static DecodeLimits Default { get; } = new();
}
