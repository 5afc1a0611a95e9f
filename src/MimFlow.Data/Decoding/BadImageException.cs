namespace MimFlow.Data.Decoding;

/// <summary>An input that cannot become a training sample; <see cref="Reason"/> says why in words (quarantine reason).</summary>
public sealed class BadImageException(string reason, Exception? inner = null) : Exception(reason, inner)
{
    public string Reason { get; } = reason;
}
