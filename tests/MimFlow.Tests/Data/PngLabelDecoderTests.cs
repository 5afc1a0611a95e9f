using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Hashing;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Tests.Data;

public sealed class PngLabelDecoderTests
{
    /// <summary>A PNG written here, chunk by chunk, so each row's filter, the IDAT split and the damage are chosen.</summary>
    private sealed record PngParts(int Width, int Height, byte[] Labels)
    {
        public Func<int, int> FilterOfRow { get; init; } = _ => 0;
        public int IdatPieces { get; init; } = 1;
        public bool TextChunk { get; init; }
        public Func<byte[], byte[]> DamageRaw { get; init; } = raw => raw;
        public Func<byte[], byte[]> DamageCompressed { get; init; } = data => data;
        public bool End { get; init; } = true;
        public (string Type, byte[] Data)? Extra { get; init; }

        public byte[] Write()
        {
            var output = new MemoryStream();
            output.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
            byte[] header = new byte[13];
            BinaryPrimitives.WriteInt32BigEndian(header, Width);
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), Height);
            header[8] = 8;
            Chunk(output, "IHDR", header);
            if (TextChunk) Chunk(output, "tEXt", "Comment\0made by a test"u8.ToArray());
            if (Extra is var (type, data)) Chunk(output, type, data);
            var raw = new MemoryStream();
            for (int y = 0; y < Height; y++)
            {
                int filter = FilterOfRow(y);
                raw.WriteByte((byte)filter);
                for (int x = 0; x < Width; x++)
                {
                    int left = x > 0 ? Labels[y * Width + x - 1] : 0, above = y > 0 ? Labels[(y - 1) * Width + x] : 0;
                    int corner = x > 0 && y > 0 ? Labels[(y - 1) * Width + x - 1] : 0;
                    int predictor = filter switch { 1 => left, 2 => above, 3 => (left + above) >> 1, 4 => Paeth(left, above, corner), _ => 0 };
                    raw.WriteByte((byte)(Labels[y * Width + x] - predictor));
                }
            }
            var compressed = new MemoryStream();
            using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true)) zlib.Write(DamageRaw(raw.ToArray()));
            byte[] stream = DamageCompressed(compressed.ToArray());
            int piece = (stream.Length + IdatPieces - 1) / IdatPieces;
            for (int at = 0; at < stream.Length; at += piece) Chunk(output, "IDAT", stream[at..Math.Min(stream.Length, at + piece)]);
            if (End) Chunk(output, "IEND", []);
            return output.ToArray();
        }

        private static int Paeth(int a, int b, int c)
        {
            int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
            return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        }

        private static void Chunk(Stream output, string type, byte[] data)
        {
            Span<byte> word = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(word, data.Length);
            output.Write(word);
            byte[] typed = [.. System.Text.Encoding.ASCII.GetBytes(type), .. data];
            output.Write(typed);
            BinaryPrimitives.WriteUInt32BigEndian(word, Crc32.HashToUInt32(typed));
            output.Write(word);
        }
    }

    /// <summary>Regions of constant labels with noisy borders, as label maps look.</summary>
    private static byte[] Labels(int width, int height, int seed)
    {
        var random = new Random(seed);
        byte[] labels = new byte[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                labels[y * width + x] = (byte)(random.Next(10) == 0 ? random.Next(151) : (x / 13 * 7 + y / 9 * 3) % 151);
        return labels;
    }

    private static byte[] WithLibvips(byte[] png)
    {
        using var image = Image.NewFromBuffer(png, access: Enums.Access.Sequential, failOn: Enums.FailOn.Error);
        return image.WriteToMemory<byte>();
    }

    private static byte[]? Decode(byte[] png)
    {
        Assert.True(PngLabelDecoder.IsGreyscale8(png, out int width, out int height));
        return PngLabelDecoder.Decode(png, width, height);
    }

    [Fact]
    public void Every_row_filter_split_and_ancillary_chunk_decodes_to_the_labels_libvips_reads()
    {
        foreach (var (width, height, noise) in new[] { (1, 1, false), (7, 5, false), (97, 61, false), (640, 3, false), (3, 200, false), (131, 67, true) })
        {
            byte[] labels = Labels(width, height, width * 31 + height);
            if (noise) new Random(width).NextBytes(labels); // every byte value, and predictor ties of every kind
            foreach (int filter in new[] { 0, 1, 2, 3, 4, -1 })
            {
                var parts = new PngParts(width, height, labels) { FilterOfRow = filter >= 0 ? _ => filter : y => (y * 7 + 3) % 5, IdatPieces = filter == -1 ? 3 : 1, TextChunk = filter == 3 };
                byte[] png = parts.Write();
                byte[]? decoded = Decode(png);
                Assert.NotNull(decoded);
                Assert.Equal(labels, decoded);
                Assert.Equal(WithLibvips(png), decoded);
            }
        }

        // libvips' own writer, each of its filter settings: the same labels.
        byte[] map = Labels(123, 45, 5);
        using var written = Image.NewFromMemory(map, 123, 45, 1, Enums.BandFormat.Uchar);
        foreach (var filter in new[] { Enums.ForeignPngFilter.None, Enums.ForeignPngFilter.Sub, Enums.ForeignPngFilter.Up, Enums.ForeignPngFilter.Avg, Enums.ForeignPngFilter.Paeth, Enums.ForeignPngFilter.All })
            Assert.Equal(map, Decode(written.PngsaveBuffer(filter: filter)));
    }

    [Fact]
    public void Damaged_label_pngs_are_refused_naming_the_chunk_or_the_rows_and_the_reason()
    {
        byte[] labels = Labels(50, 40, 1);
        var intact = new PngParts(50, 40, labels) { FilterOfRow = y => y % 5 };
        byte[] png = intact.Write();

        byte[] flipped = (byte[])png.Clone();
        flipped[^30] ^= 0x10; // inside the IDAT's data
        Assert.Contains("IDAT at byte 33 fails its CRC", Assert.Throws<BadImageException>(() => Decode(flipped)).Reason);
        Assert.Contains("truncated", Assert.Throws<BadImageException>(() => Decode(png[..^20])).Reason);
        Assert.Contains("truncated", Assert.Throws<BadImageException>(() => Decode((intact with { End = false }).Write())).Reason);
        Assert.Contains("inflates to 1989 of the 2040 bytes", Assert.Throws<BadImageException>(() => Decode((intact with { DamageRaw = raw => raw[..^51] }).Write())).Reason);
        Assert.Contains("inflates to more than the 2040 bytes", Assert.Throws<BadImageException>(() => Decode((intact with { DamageRaw = raw => [.. raw, 0] }).Write())).Reason);
        Assert.Contains("row 2 has filter type 7", Assert.Throws<BadImageException>(() => Decode((intact with { DamageRaw = raw => { raw[2 * 51] = 7; return raw; } }).Write())).Reason);
        // The zlib stream's Adler-32 (its last four bytes) no longer matches, the chunk's CRC does.
        Assert.Contains("does not inflate", Assert.Throws<BadImageException>(() => Decode((intact with { DamageCompressed = data => { data[^1] ^= 1; return data; } }).Write())).Reason);
    }

    [Fact]
    public void Transparency_and_palette_chunks_leave_the_file_to_libvips_and_the_annotation_check_names_the_label_map()
    {
        byte[] labels = Labels(8, 8, 2);
        Assert.Null(Decode(new PngParts(8, 8, labels) { Extra = ("tRNS", [0, 7]) }.Write()));
        Assert.Null(Decode(new PngParts(8, 8, labels) { Extra = ("PLTE", [1, 2, 3]) }.Write()));
        Assert.Null(Decode(new PngParts(8, 8, labels) { Extra = ("ZZZZ", []) }.Write()));
        Assert.NotNull(Decode(new PngParts(8, 8, labels) { Extra = ("zzZz", [9]) }.Write()));

        // Through the annotation check: a transparent greyscale map reads as two bands, as it always did.
        var header = ImageHeader.Read(TestImages.Jpeg(8, 8), DecodeLimits.Default);
        var refused = Assert.Throws<BadImageException>(() => AnnotationCheck.Decode(new PngParts(8, 8, labels) { Extra = ("tRNS", [0, 7]) }.Write(), header));
        Assert.Contains("2 band(s)", refused.Reason);
        Assert.Equal(labels, AnnotationCheck.Decode(new PngParts(8, 8, labels).Write(), header).Labels);
        byte[] damaged = new PngParts(8, 8, labels).Write();
        damaged[^14] ^= 1; // the IDAT's CRC
        Assert.StartsWith("annotation does not decode: PNG chunk IDAT at byte 33 fails its CRC", Assert.Throws<BadImageException>(() => AnnotationCheck.Decode(damaged, header)).Reason);
        Assert.Contains("annotation is 8×8 but the image is 9×8",
            Assert.Throws<BadImageException>(() => AnnotationCheck.Decode(new PngParts(8, 8, labels).Write(), ImageHeader.Read(TestImages.Jpeg(9, 8), DecodeLimits.Default))).Reason);
    }

    [Fact]
    public void Damage_past_the_checksums_decodes_or_is_refused_never_anything_else()
    {
        // Every chunk CRC is recomputed, so the damage reaches the inflater and the row filters.
        byte[] labels = Labels(64, 48, 3);
        var random = new Random(17);
        int decoded = 0, refused = 0;
        for (int i = 0; i < 300; i++)
        {
            var parts = new PngParts(64, 48, labels)
            {
                FilterOfRow = y => y % 5,
                DamageCompressed = data =>
                {
                    int at = random.Next(data.Length);
                    switch (random.Next(3))
                    {
                        case 0: data[at] ^= (byte)(1 << random.Next(8)); return data;
                        case 1: return data[..at];
                        default: data.AsSpan(at, Math.Min(data.Length - at, 1 + random.Next(8))).Fill((byte)random.Next(256)); return data;
                    }
                },
            };
            try
            {
                Assert.Equal(labels.Length, Decode(parts.Write())!.Length);
                decoded++;
            }
            catch (BadImageException)
            {
                refused++;
            }
        }
        Assert.True(refused > 250, $"{refused} refused, {decoded} decoded");
    }
}
