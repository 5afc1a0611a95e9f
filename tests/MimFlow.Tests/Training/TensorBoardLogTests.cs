using System.Buffers.Binary;
using System.Diagnostics;
using MimFlow.Training.Runs;

namespace MimFlow.Tests.Training;

public sealed class TensorBoardLogTests
{
    /// <summary>CRC-32C computed bit by bit (not by the writer's table), for an independent check of the framing.</summary>
    private static uint MaskedCrc(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (uint)-(int)(crc & 1));
        }
        crc = ~crc;
        return ((crc >> 15) | (crc << 17)) + 0xA282EAD8;
    }

    private static List<byte[]> Records(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var records = new List<byte[]>();
        for (int at = 0; at < bytes.Length;)
        {
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(at));
            Assert.Equal(MaskedCrc(bytes.AsSpan(at, 8)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 8)));
            var payload = bytes.AsSpan(at + 12, (int)length).ToArray();
            Assert.Equal(MaskedCrc(payload), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 12 + (int)length)));
            records.Add(payload);
            at += 16 + (int)length;
        }
        return records;
    }

    [Fact]
    public void Records_are_framed_with_valid_crcs_and_carry_wall_time_step_and_values()
    {
        using var dir = new TemporaryDirectory();
        var time = new DateTimeOffset(2026, 12, 1, 12, 0, 0, 250, TimeSpan.Zero);
        string path;
        using (var log = TensorBoardLog.Open(dir.Path, resumedAtStep: null, now: time))
        {
            log.Scalars(5_000_000_000, [new("loss", 2.5), new("lr", 1.5e-3), new("skipped", double.NaN)], time);
            path = log.Path;
        }
        Assert.StartsWith(Path.Combine(dir.Path, TensorBoardLog.FolderName, "events.out.tfevents."), path);
        var records = Records(path);
        Assert.Equal(2, records.Count);
        var scalar = records[1];
        Assert.Equal(0x09, scalar[0]);
        Assert.Equal(time.ToUnixTimeMilliseconds() / 1000.0, BinaryPrimitives.ReadDoubleLittleEndian(scalar.AsSpan(1)), 6);
        Assert.Equal(0x10, scalar[9]);
        // step 5e9 does not fit an int32: the varint carries it whole.
        long step = 0;
        int shift = 0, i = 10;
        for (; (scalar[i] & 0x80) != 0; i++, shift += 7) step |= (long)(scalar[i] & 0x7F) << shift;
        step |= (long)scalar[i] << shift;
        Assert.Equal(5_000_000_000, step);
        string text = System.Text.Encoding.Latin1.GetString(scalar);
        Assert.Contains("loss", text);
        Assert.Contains("lr", text);
        Assert.DoesNotContain("skipped", text);
    }

    [RequiresProgramFact("protoc", "protobuf-compiler")]
    public async Task Protoc_decodes_every_record_as_an_event_with_its_summary()
    {
        using var dir = new TemporaryDirectory();
        string path;
        using (var log = TensorBoardLog.Open(dir.Path, resumedAtStep: 7))
        {
            log.Scalars(7, [new("loss_mim", 3.25)]);
            path = log.Path;
        }
        var decoded = new List<string>();
        foreach (var record in Records(path))
        {
            var start = new ProcessStartInfo("protoc", "--decode_raw") { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
            using var protoc = Process.Start(start)!;
            await protoc.StandardInput.BaseStream.WriteAsync(record);
            protoc.StandardInput.Close();
            decoded.Add(await protoc.StandardOutput.ReadToEndAsync());
            await protoc.WaitForExitAsync();
            Assert.Equal(0, protoc.ExitCode);
        }
        Assert.Contains("3: \"brain.Event:2\"", decoded[0]);
        Assert.Contains("2: 7", decoded[1]);
        Assert.Matches(@"6 \{\s+1: 1\s+\}", decoded[1]);
        Assert.Contains("1: \"loss_mim\"", decoded[2]);
        // 3.25f is 0x40500000.
        Assert.Contains("2: 0x40500000", decoded[2]);
    }

    [Fact]
    public void The_metrics_log_writes_each_step_to_tensorboard_and_a_resumed_log_starts_a_new_session_at_its_step()
    {
        using var dir = new TemporaryDirectory();
        using (var log = MetricsLog.Open(dir.Path, keepThroughStep: null))
            for (long step = 0; step < 6; step++) log.Write(new Dictionary<string, object> { ["step"] = step, ["epoch"] = 0, ["loss"] = 6.0 - step, ["lr"] = 1e-3 });
        using (var log = MetricsLog.Open(dir.Path, keepThroughStep: 3))
        {
            log.Write(new Dictionary<string, object> { ["step"] = 4L, ["epoch"] = 0, ["loss"] = 0.5 });
            log.Scalars(4, new Dictionary<string, double> { ["eval/top1"] = 0.75 });
        }
        var files = Directory.EnumerateFiles(Path.Combine(dir.Path, TensorBoardLog.FolderName)).ToList();
        Assert.Equal(2, files.Count);
        var records = files.Select(Records).OrderBy(r => r.Count).ToList();
        Assert.Equal(1 + 6, records[1].Count);
        // The resumed file: version, SessionLog START at step 4 (field 6), the step and the evaluation.
        Assert.Equal(4, records[0].Count);
        Assert.Contains((byte)0x32, records[0][1]);
        Assert.Contains("eval/top1", System.Text.Encoding.Latin1.GetString(records[0][3]));
    }
}
