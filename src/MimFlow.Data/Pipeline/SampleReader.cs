using MimFlow.Core.IO;
using MimFlow.Data.Decoding;
using MimFlow.Data.Sources;
using Polly;
using Polly.Retry;

namespace MimFlow.Data.Pipeline;

/// <summary>
/// Reads an input's bytes (a file, a tar member, a Parquet cell) asynchronously, retrying transient IO errors with jittered exponential backoff; a missing,
/// unreadable, damaged or oversized input becomes a <see cref="BadImageException"/> with the reason.
/// </summary>
public sealed class SampleReader
{
    private readonly ResiliencePipeline retry;
    private readonly DecodeLimits limits;

    public SampleReader(int retries, DecodeLimits limits, TimeSpan? firstDelay = null)
    {
        this.limits = limits;
        retry = retries <= 0
            ? ResiliencePipeline.Empty
            : new ResiliencePipelineBuilder()
                .AddRetry(new RetryStrategyOptions
                {
                    ShouldHandle = new PredicateBuilder().Handle<IOException>(IsTransient),
                    MaxRetryAttempts = retries,
                    BackoffType = DelayBackoffType.Exponential,
                    UseJitter = true,
                    Delay = firstDelay ?? TimeSpan.FromMilliseconds(50),
                })
                .Build();
    }

    /// <summary>Counts attempts beyond the first, for reports and tests.</summary>
    public int Retries => retriesSeen;

    private int retriesSeen;

    public Task<byte[]> ReadAsync(string path, CancellationToken cancellationToken) => ReadAsync(new FileBytes(path), cancellationToken).AsTask();

    /// <summary>Reads any byte source (file, tar member, Parquet cell) under the same retry, limit and refusal rules.</summary>
    internal async ValueTask<byte[]> ReadAsync(ByteSource source, CancellationToken cancellationToken)
    {
        int attempt = 0;
        try
        {
            return await retry.ExecuteAsync(async token =>
            {
                if (attempt++ > 0) Interlocked.Increment(ref retriesSeen);
                return await source.ReadAsync(limits.MaxFileBytes, token);
            }, cancellationToken);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BadImageException("file vanished between listing and reading", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new BadImageException($"unreadable: {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new BadImageException($"read failed after {attempt} attempt(s): {e.Message}", e);
        }
    }

    /// <summary>IO errors worth another try; missing files and permission errors are final.</summary>
    private static bool IsTransient(IOException e) =>
        e is not (FileNotFoundException or DirectoryNotFoundException or PathTooLongException or NotARegularFileException or FileTooLargeException or PersistentIoException);
}
