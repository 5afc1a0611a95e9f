using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace MimFlow.Training.Distributed;

/// <summary>
/// The rendezvous torchrun and Kubeflow's PyTorchJob expect when no MPI is there: rank 0 listens on MASTER_PORT, every
/// other rank connects to MASTER_ADDR:MASTER_PORT and says its rank and world size, and rank 0 sends each the same
/// few bytes (NCCL's unique id). It carries no training data: NCCL does. The connections then stay open as a liveness
/// line: a rank whose process dies closes its socket, so rank 0 learns which rank was lost at once (and a rank that
/// loses rank 0 learns that), and every survivor is told and ends with a message naming it instead of waiting in a
/// collective. A rank that finishes says goodbye first, so a clean end is not taken for a loss.
/// </summary>
public sealed class TcpRendezvous : IDisposable
{
    private const uint Magic = 0x4D494D46; // "MIMF"
    private const byte Goodbye = (byte)'B', Lost = (byte)'L';

    private readonly Socket[] peers;
    private readonly int rank;
    private readonly Action<string> onLost;
    private readonly CancellationTokenSource closing = new();
    private readonly List<Task> monitors = [];
    private int finished;

    private TcpRendezvous(int rank, Socket[] peers, byte[] payload, Action<string> onLost)
    {
        this.rank = rank;
        this.peers = peers;
        this.onLost = onLost;
        Payload = payload;
    }

    /// <summary>Rank 0's bytes, as every rank received them.</summary>
    public byte[] Payload { get; }

    /// <summary>
    /// Joins the rendezvous. Rank 0 sends <paramref name="payload"/> (others pass null and receive it). Connecting is
    /// retried until <paramref name="timeout"/>, since pods and tasks start in any order.
    /// </summary>
    /// <param name="onLost">Told, once, a message naming a lost rank (the caller ends the process).</param>
    public static TcpRendezvous Join(string host, int port, int rank, int worldSize, byte[]? payload, TimeSpan timeout, Action<string> onLost)
    {
        if (worldSize < 1 || rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank {rank} is not in 0..{worldSize - 1}");
        if (port is < 1 or > 65535) throw new ArgumentOutOfRangeException(nameof(port), port, "MASTER_PORT must be a TCP port (1–65535)");
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            return rank == 0
                ? Serve(port, worldSize, payload ?? throw new ArgumentNullException(nameof(payload), "rank 0 sends the payload"), deadline.Token, onLost)
                : Connect(host, port, rank, worldSize, deadline.Token, onLost);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            throw new TimeoutException(rank == 0
                ? $"rendezvous on port {port}: not every one of the {worldSize} ranks arrived within {timeout.TotalSeconds:F0} s (check WORLD_SIZE and that every rank was started)"
                : $"rendezvous at {host}:{port}: rank 0 did not answer within {timeout.TotalSeconds:F0} s (check MASTER_ADDR/MASTER_PORT and that rank 0 runs)");
        }
    }

    private static TcpRendezvous Serve(int port, int worldSize, byte[] payload, CancellationToken token, Action<string> onLost)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(IPAddress.Any, port));
        listener.Listen(worldSize);
        var peers = new Socket[worldSize];
        try
        {
            for (int arrived = 1; arrived < worldSize;)
            {
                var socket = listener.AcceptAsync(token).AsTask().GetAwaiter().GetResult();
                socket.NoDelay = true;
                var hello = ReadExactly(socket, 12, token);
                uint magic = BinaryPrimitives.ReadUInt32LittleEndian(hello);
                int peerRank = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(4)), peerWorld = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(8));
                string? refusal = magic != Magic ? "not a MimFlow rank (wrong greeting)"
                    : peerWorld != worldSize ? $"rank {peerRank} says world size {peerWorld}, rank 0 has {worldSize}: the ranks were started with different WORLD_SIZE"
                    : peerRank < 1 || peerRank >= worldSize ? $"rank {peerRank} is not in 1..{worldSize - 1}"
                    : peers[peerRank] is not null ? $"rank {peerRank} arrived twice: two processes were given the same RANK"
                    : null;
                if (refusal is not null)
                {
                    Send(socket, [1, .. System.Text.Encoding.UTF8.GetBytes(refusal)]);
                    socket.Dispose();
                    throw new InvalidOperationException($"rendezvous: {refusal}");
                }
                peers[peerRank] = socket;
                arrived++;
            }
            var message = new byte[5 + payload.Length];
            BinaryPrimitives.WriteInt32LittleEndian(message.AsSpan(1), payload.Length);
            payload.CopyTo(message, 5);
            for (int r = 1; r < worldSize; r++) Send(peers[r], message);
        }
        catch
        {
            foreach (var socket in peers) socket?.Dispose();
            throw;
        }
        var rendezvous = new TcpRendezvous(0, peers, payload, onLost);
        for (int r = 1; r < worldSize; r++) rendezvous.Watch(r);
        return rendezvous;
    }

    private static TcpRendezvous Connect(string host, int port, int rank, int worldSize, CancellationToken token, Action<string> onLost)
    {
        Socket? socket = null;
        while (socket is null)
        {
            var attempt = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                attempt.ConnectAsync(host, port, token).AsTask().GetAwaiter().GetResult();
                socket = attempt;
            }
            catch (SocketException)
            {
                attempt.Dispose();
                Task.Delay(200, token).GetAwaiter().GetResult();
            }
        }
        try
        {
            var hello = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(hello, Magic);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(4), rank);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(8), worldSize);
            Send(socket, hello);
            var status = ReadExactly(socket, 1, token);
            if (status[0] != 0)
            {
                var reason = new byte[4096];
                int length = socket.Receive(reason);
                throw new InvalidOperationException($"rendezvous at {host}:{port} refused rank {rank}: {System.Text.Encoding.UTF8.GetString(reason, 0, length)}");
            }
            int size = BinaryPrimitives.ReadInt32LittleEndian(ReadExactly(socket, 4, token));
            if (size is < 0 or > 1 << 20) throw new InvalidDataException($"rendezvous at {host}:{port}: a payload of {size} bytes is not what rank 0 sends");
            var payload = ReadExactly(socket, size, token);
            var peers = new Socket[worldSize];
            peers[0] = socket;
            var rendezvous = new TcpRendezvous(rank, peers, payload, onLost);
            rendezvous.Watch(0);
            return rendezvous;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Reads the peer's line until it closes: goodbye ends quietly; a close without one, or rank 0 reporting a loss, is a lost rank.</summary>
    private void Watch(int peer)
    {
        var socket = peers[peer];
        monitors.Add(Task.Run(async () =>
        {
            var buffer = new byte[64];
            string? lost = null;
            int lostRank = peer;
            bool reported = false;
            try
            {
                int read = await socket.ReceiveAsync(buffer, SocketFlags.None, closing.Token);
                if (read == 0) lost = $"rank {peer} closed its connection without finishing (its process ended)";
                else if (buffer[0] == Lost)
                {
                    for (int have = read; have < 5;)
                    {
                        int more = await socket.ReceiveAsync(buffer.AsMemory(have), SocketFlags.None, closing.Token);
                        if (more == 0) break;
                        have += more;
                    }
                    lostRank = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(1));
                    reported = true;
                    lost = $"rank {lostRank} was lost (reported by rank 0)";
                }
            }
            catch (OperationCanceledException) { }
            catch (SocketException e) { lost = $"rank {peer}'s connection failed ({e.SocketErrorCode})"; }
            catch (ObjectDisposedException) { }
            if (lost is null || Volatile.Read(ref finished) != 0) return;
            if (rank == 0 && !reported)
            {
                // Tell the survivors which rank it was before ending.
                var notice = new byte[5];
                notice[0] = Lost;
                BinaryPrimitives.WriteInt32LittleEndian(notice.AsSpan(1), peer);
                for (int r = 1; r < peers.Length; r++)
                    if (r != peer) try { Send(peers[r], notice); } catch (SocketException) { } catch (ObjectDisposedException) { }
            }
            LostRank = lostRank;
            onLost($"mimflow rank {rank}: {lost}; ending the job (restart it with --resume)");
        }));
    }

    /// <summary>The rank reported lost, once one was.</summary>
    public int? LostRank { get; private set; }

    /// <summary>Says goodbye to every peer (a clean end), then closes.</summary>
    public void Finish()
    {
        if (Interlocked.Exchange(ref finished, 1) != 0) return;
        foreach (var socket in peers)
            if (socket is not null) try { Send(socket, [Goodbye]); } catch (SocketException) { } catch (ObjectDisposedException) { }
    }

    private static void Send(Socket socket, byte[] bytes)
    {
        for (int sent = 0; sent < bytes.Length;) sent += socket.Send(bytes, sent, bytes.Length - sent, SocketFlags.None);
    }

    private static byte[] ReadExactly(Socket socket, int count, CancellationToken token)
    {
        var buffer = new byte[count];
        for (int read = 0; read < count;)
        {
            int n = socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, token).AsTask().GetAwaiter().GetResult();
            if (n == 0) throw new IOException($"the peer closed the rendezvous connection after {read} of {count} bytes");
            read += n;
        }
        return buffer;
    }

    public void Dispose()
    {
        Finish();
        closing.Cancel();
        foreach (var socket in peers) socket?.Dispose();
        try { Task.WaitAll([.. monitors], TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
        closing.Dispose();
    }
}
