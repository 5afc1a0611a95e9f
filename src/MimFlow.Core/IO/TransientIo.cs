using Polly;
using Polly.Retry;

namespace MimFlow.Core.IO;

/// <summary>
/// Opens the files a component reads and writes. Production code uses <see cref="FileOpener.Instance"/>; tests pass
/// one whose streams fail, to prove what is retried and that the result does not change.
/// </summary>
public interface IFileOpener
{
    /// <summary>A regular file for reading (<see cref="RegularFile.OpenRead"/>: never a FIFO or device).</summary>
    Stream OpenRead(string path);

    /// <summary>A new file for reading and writing; an existing one is an error.</summary>
    Stream CreateNew(string path);

    /// <summary>A file for writing at positions the caller sets, created if missing, never truncated, unbuffered (each
    /// write is one positioned write, so writing the same bytes at the same place again is harmless).</summary>
    Stream OpenWrite(string path);
}

/// <summary>The file system itself.</summary>
public sealed class FileOpener : IFileOpener
{
    public static FileOpener Instance { get; } = new();

    public Stream OpenRead(string path) => RegularFile.OpenRead(path, 1 << 16);

    public Stream CreateNew(string path) => new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16);

    public Stream OpenWrite(string path) => new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read, bufferSize: 0);
}

/// <summary>
/// Retries of transient I/O errors, as network file systems give them (NFS, Lustre, SMB mounts): an operation that
/// can be run again from its start with the same result — read a whole shard's row group, hash a file, write a file
/// to a temporary name and rename it, write bytes at a known offset — is run again after an I/O error of the
/// <see cref="TransientErrnos"/> (EIO, ESTALE, ETIMEDOUT, EAGAIN …), with jittered exponential backoff, up to
/// <see cref="Attempts"/> attempts in all. Each retry is logged and counted. Anything else (a missing file, no
/// permission, no space, damaged data) is final at once, and so is the last failure: a
/// <see cref="PersistentIoException"/> naming the file, the operation and the error, which ends the run.
/// Thread-safe; one instance per component, so its <see cref="Retries"/> count belongs to that component.
/// </summary>
public sealed class TransientIo
{
    public const int DefaultAttempts = 4;

    /// <summary>Delay before the first retry; each later one doubles it (with jitter), up to <see cref="MaxDelay"/>.</summary>
    public static readonly TimeSpan DefaultFirstDelay = TimeSpan.FromMilliseconds(200);

    public static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Linux errno values that say "try again": EINTR 4, EIO 5, EAGAIN 11, ENETDOWN 100, ENETUNREACH 101, ECONNABORTED
    /// 103, ECONNRESET 104, ETIMEDOUT 110, EHOSTDOWN 112, EHOSTUNREACH 113, ESTALE 116, EREMOTEIO 121. .NET gives an
    /// <see cref="IOException"/> the errno as its HResult for errors it has no exception type for, which these are.
    /// </summary>
    public static IReadOnlySet<int> TransientErrnos { get; } = new HashSet<int> { 4, 5, 11, 100, 101, 103, 104, 110, 112, 113, 116, 121 };

    private static readonly ResiliencePropertyKey<string> FileKey = new("mimflow.file");
    private static readonly ResiliencePropertyKey<string> WhatKey = new("mimflow.what");

    private readonly ResiliencePipeline pipeline;
    private readonly Action<string> log;
    private int retries;

    /// <param name="attempts">Attempts in all (1: no retry).</param>
    /// <param name="firstDelay">Delay before the first retry (default <see cref="DefaultFirstDelay"/>).</param>
    /// <param name="log">Where each retry is told (default: standard error, as one line).</param>
    /// <param name="files">How files are opened (default: <see cref="FileOpener.Instance"/>).</param>
    public TransientIo(int attempts = DefaultAttempts, TimeSpan? firstDelay = null, Action<string>? log = null, IFileOpener? files = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(attempts, 1);
        Attempts = attempts;
        Files = files ?? FileOpener.Instance;
        this.log = log ?? (line => Console.Error.WriteLine($"mimflow: {line}"));
        pipeline = attempts == 1
            ? ResiliencePipeline.Empty
            : new ResiliencePipelineBuilder().AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = arguments => ValueTask.FromResult(arguments.Outcome.Exception is { } error && IsTransient(error)),
                MaxRetryAttempts = attempts - 1,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = firstDelay ?? DefaultFirstDelay,
                MaxDelay = MaxDelay,
                OnRetry = arguments =>
                {
                    Interlocked.Increment(ref retries);
                    string file = arguments.Context.Properties.GetValue(FileKey, "?"), what = arguments.Context.Properties.GetValue(WhatKey, "I/O");
                    this.log($"{file}: {what}: {arguments.Outcome.Exception?.Message} (transient; attempt {arguments.AttemptNumber + 2} of {Attempts} in {arguments.RetryDelay.TotalSeconds:F1} s)");
                    return ValueTask.CompletedTask;
                },
            }).Build();
    }

    public int Attempts { get; }

    public IFileOpener Files { get; }

    /// <summary>Retries so far (attempts beyond the first, over every operation of this instance).</summary>
    public int Retries => Volatile.Read(ref retries);

    /// <summary>Whether an error is worth another attempt: an <see cref="IOException"/> carrying one of the
    /// <see cref="TransientErrnos"/>, or a timeout. Missing files, permissions, full disks and damaged data are not.</summary>
    public static bool IsTransient(Exception error) => error switch
    {
        PersistentIoException or NotARegularFileException or FileTooLargeException or FileNotFoundException or DirectoryNotFoundException
            or PathTooLongException or EndOfStreamException => false,
        IOException io => TransientErrnos.Contains(io.HResult),
        TimeoutException => true,
        _ => false,
    };

    /// <summary>The transient error behind <paramref name="error"/> (itself, or one it wraps: a library may wrap the I/O
    /// error of the stream it reads), or null.</summary>
    public static Exception? TransientCause(Exception error)
    {
        for (Exception? e = error; e is not null; e = e is AggregateException { InnerExceptions.Count: 1 } aggregate ? aggregate.InnerExceptions[0] : e.InnerException)
            if (IsTransient(e)) return e;
        return null;
    }

    /// <summary>Runs <paramref name="operation"/> (given its 0-based attempt number, so a retry can start over cleanly)
    /// until it succeeds, fails for good, or the attempts are spent.</summary>
    /// <param name="file">What the operation reads or writes, for the log and the final error.</param>
    /// <param name="what">The operation in words ("reading row group 3").</param>
    public async Task<T> RunAsync<T>(string file, string what, Func<int, CancellationToken, Task<T>> operation, CancellationToken cancellationToken = default)
    {
        var context = Context(file, what, cancellationToken);
        int attempt = 0;
        try
        {
            return await pipeline.ExecuteAsync(async (context, _) => await operation(attempt++, context.CancellationToken), context, 0);
        }
        catch (Exception error) when (IsTransient(error))
        {
            throw new PersistentIoException(file, what, attempt, error);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    public Task RunAsync(string file, string what, Func<int, CancellationToken, Task> operation, CancellationToken cancellationToken = default) =>
        RunAsync(file, what, async (attempt, token) =>
        {
            await operation(attempt, token);
            return true;
        }, cancellationToken);

    /// <summary>As <see cref="RunAsync{T}"/>, synchronously (the delays block the thread).</summary>
    public T Run<T>(string file, string what, Func<int, T> operation, CancellationToken cancellationToken = default)
    {
        var context = Context(file, what, cancellationToken);
        int attempt = 0;
        try
        {
            return pipeline.Execute((_, _) => operation(attempt++), context, 0);
        }
        catch (Exception error) when (IsTransient(error))
        {
            throw new PersistentIoException(file, what, attempt, error);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    public void Run(string file, string what, Action<int> operation, CancellationToken cancellationToken = default) =>
        Run(file, what, attempt =>
        {
            operation(attempt);
            return true;
        }, cancellationToken);

    private static ResilienceContext Context(string file, string what, CancellationToken cancellationToken)
    {
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        context.Properties.Set(FileKey, file);
        context.Properties.Set(WhatKey, what);
        return context;
    }
}

/// <summary>A transient I/O error that lasted through every attempt: the run ends here, naming the file.</summary>
public sealed class PersistentIoException(string file, string what, int attempts, Exception last)
    : IOException($"{file}: {what} failed {attempts} time(s) in a row with I/O errors (last: {last.Message}); giving up", last)
{
    public string File { get; } = file;
}
