using System.Buffers.Binary;
using MimFlow.Data.Decoding;
using NetVips;

namespace MimFlow.Tests.Data;

/// <summary>How <see cref="JpegWriter"/> lays out a file.</summary>
/// <param name="LumaH">Luma horizontal sampling factor (chroma is always 1×1): 2 with <paramref name="LumaV"/> 1 is 4:2:2.</param>
/// <param name="ComponentIds">The three component ids written in SOF and SOS.</param>
/// <param name="App0">The APP0 segment's contents (after the length field), or null for none.</param>
/// <param name="Width">The width written in SOF, when it is to differ from the pixels' (hostile files).</param>
/// <param name="Tamper">Called with (component, block number within the component, zig-zag coefficients) after
/// quantisation and before entropy coding: hostile coefficient values in an otherwise valid file.</param>
internal sealed record JpegLayout(int LumaH = 1, int LumaV = 1, int Quality = 85, int RestartInterval = 0, byte[]? ComponentIds = null, byte[]? App0 = null,
    int? Width = null, Action<int, int, int[]>? Tamper = null)
{
    /// <summary>The JFIF 1.01 APP0 libjpeg writes (14 bytes).</summary>
    public static byte[] Jfif => "JFIF\0"u8.ToArray().Concat(new byte[] { 1, 1, 0, 0, 1, 0, 1, 0, 0 }).ToArray();
}

/// <summary>
/// A small baseline JPEG writer for tests: YCbCr with any luma sampling (4:2:2 and 4:4:0, which libvips' jpegsave does
/// not write), restart intervals, chosen component ids and APP0. Quantisation and Huffman tables are taken from
/// libvips' own output at the same quality (the standard tables), so the files are ordinary ones libjpeg reads.
/// </summary>
internal static class JpegWriter
{
    public static byte[] Encode(byte[] rgb, int width, int height, JpegLayout layout)
    {
        int hY = layout.LumaH, vY = layout.LumaV;
        byte[] ids = layout.ComponentIds ?? [1, 2, 3];
        var (dqt, dht, quant) = Tables(layout.Quality);
        int mcuW = 8 * hY, mcuH = 8 * vY;
        int mcusAcross = (width + mcuW - 1) / mcuW, mcusDown = (height + mcuH - 1) / mcuH;

        // Full-resolution YCbCr over the MCU grid (edges replicated), then chroma averaged over hY × vY boxes.
        int gw = mcusAcross * mcuW, gh = mcusDown * mcuH;
        var planes = new float[3][];
        for (int c = 0; c < 3; c++) planes[c] = new float[gw * gh];
        for (int y = 0; y < gh; y++)
            for (int x = 0; x < gw; x++)
            {
                int i = 3 * (Math.Min(y, height - 1) * width + Math.Min(x, width - 1));
                float r = rgb[i], g = rgb[i + 1], b = rgb[i + 2];
                planes[0][y * gw + x] = 0.299f * r + 0.587f * g + 0.114f * b;
                planes[1][y * gw + x] = -0.168736f * r - 0.331264f * g + 0.5f * b + 128;
                planes[2][y * gw + x] = 0.5f * r - 0.418688f * g - 0.081312f * b + 128;
            }
        int cw = gw / hY, ch = gh / vY;
        var chroma = new float[2][];
        for (int c = 0; c < 2; c++)
        {
            chroma[c] = new float[cw * ch];
            for (int y = 0; y < ch; y++)
                for (int x = 0; x < cw; x++)
                {
                    float sum = 0;
                    for (int dy = 0; dy < vY; dy++)
                        for (int dx = 0; dx < hY; dx++) sum += planes[c + 1][(y * vY + dy) * gw + x * hY + dx];
                    chroma[c][y * cw + x] = sum / (hY * vY);
                }
        }

        var codes = dht.Select(BuildCodes).ToArray(); // DC0, AC0, DC1, AC1
        var bits = new BitWriter();
        int[] predictors = new int[3], blocks = new int[3];
        Action<int[]> Tampering(int component) => zigzag => layout.Tamper?.Invoke(component, blocks[component]++, zigzag);
        int restarts = 0;
        for (int my = 0; my < mcusDown; my++)
            for (int mx = 0; mx < mcusAcross; mx++)
            {
                int mcu = my * mcusAcross + mx;
                if (layout.RestartInterval > 0 && mcu > 0 && mcu % layout.RestartInterval == 0)
                {
                    bits.Flush();
                    bits.Marker((byte)(0xD0 + (restarts++ & 7)));
                    Array.Clear(predictors);
                }
                for (int by = 0; by < vY; by++)
                    for (int bx = 0; bx < hY; bx++)
                        EncodeBlock(bits, planes[0], gw, mx * mcuW + 8 * bx, my * mcuH + 8 * by, quant[0], ref predictors[0], codes[0], codes[1], Tampering(0));
                EncodeBlock(bits, chroma[0], cw, mx * 8, my * 8, quant[1], ref predictors[1], codes[2], codes[3], Tampering(1));
                EncodeBlock(bits, chroma[1], cw, mx * 8, my * 8, quant[1], ref predictors[2], codes[2], codes[3], Tampering(2));
            }
        bits.Flush();

        var file = new List<byte> { 0xFF, 0xD8 };
        if (layout.App0 is { } app0) Segment(file, 0xE0, app0);
        Segment(file, 0xDB, dqt);
        int sofWidth = layout.Width ?? width;
        Segment(file, 0xC0, [8, (byte)(height >> 8), (byte)height, (byte)(sofWidth >> 8), (byte)sofWidth, 3,
            ids[0], (byte)((hY << 4) | vY), 0, ids[1], 0x11, 1, ids[2], 0x11, 1]);
        Segment(file, 0xC4, dht.SelectMany(t => t).ToArray());
        if (layout.RestartInterval > 0) Segment(file, 0xDD, [(byte)(layout.RestartInterval >> 8), (byte)layout.RestartInterval]);
        Segment(file, 0xDA, [3, ids[0], 0x00, ids[1], 0x11, ids[2], 0x11, 0, 63, 0]);
        file.AddRange(bits.Bytes);
        file.AddRange([0xFF, 0xD9]);
        return file.ToArray();
    }

    /// <summary>A segment: marker, big-endian length (counting itself), contents.</summary>
    public static void Segment(List<byte> file, byte marker, byte[] contents)
    {
        file.AddRange([0xFF, marker, (byte)((contents.Length + 2) >> 8), (byte)(contents.Length + 2)]);
        file.AddRange(contents);
    }

    private static readonly Dictionary<int, (byte[] Dqt, byte[][] Dht, int[][] Quant)> TableCache = [];

    /// <summary>libvips' DQT contents and four DHT tables (DC0, AC0, DC1, AC1, each with its class/id byte) at this quality.</summary>
    private static (byte[] Dqt, byte[][] Dht, int[][] Quant) Tables(int quality)
    {
        lock (TableCache)
        {
            if (TableCache.TryGetValue(quality, out var cached)) return cached;
            using var grey = (Image.Black(16, 16, bands: 3) + 100).Cast(Enums.BandFormat.Uchar).Copy(interpretation: Enums.Interpretation.Srgb);
            byte[] sample = grey.JpegsaveBuffer(q: quality, subsampleMode: Enums.ForeignSubsample.Off, keep: Enums.ForeignKeep.None);
            var dqt = new List<byte>();
            var dht = new List<byte[]>();
            foreach (var (marker, offset, length) in Segments(sample))
            {
                var contents = sample.AsSpan(offset + 4, length - 2);
                if (marker == 0xDB) dqt.AddRange(contents.ToArray());
                if (marker != 0xC4) continue;
                while (contents.Length > 0)
                {
                    int count = 0;
                    for (int l = 1; l <= 16; l++) count += contents[l];
                    dht.Add(contents[..(17 + count)].ToArray());
                    contents = contents[(17 + count)..];
                }
            }
            // Order DC0, AC0, DC1, AC1 by their class/id byte.
            var ordered = new[] { 0x00, 0x10, 0x01, 0x11 }.Select(tc => dht.Single(t => t[0] == tc)).ToArray();
            var quant = new int[2][];
            for (int t = 0, p = 0; t < 2; t++, p += 65)
            {
                if (dqt[p] >> 4 != 0) throw new InvalidOperationException("expected 8-bit quantisation tables");
                quant[dqt[p] & 15] = Enumerable.Range(0, 64).Select(k => (int)dqt[p + 1 + k]).ToArray(); // zig-zag order
            }
            return TableCache[quality] = (dqt.ToArray(), ordered, quant);
        }
    }

    /// <summary>Marker segments from SOI up to and including SOS: (marker, offset of its FF, length field).</summary>
    public static List<(byte Marker, int Offset, int Length)> Segments(byte[] jpeg)
    {
        var list = new List<(byte, int, int)>();
        int p = 2;
        while (p + 4 <= jpeg.Length && jpeg[p] == 0xFF)
        {
            byte marker = jpeg[p + 1];
            int length = BinaryPrimitives.ReadUInt16BigEndian(jpeg.AsSpan(p + 2));
            list.Add((marker, p, length));
            if (marker == 0xDA) break;
            p += 2 + length;
        }
        return list;
    }

    private static (int[] Code, int[] Size) BuildCodes(byte[] table)
    {
        int[] code = new int[256], size = new int[256];
        int next = 0, v = 17;
        for (int l = 1; l <= 16; l++)
        {
            for (int i = 0; i < table[l]; i++, v++)
            {
                code[table[v]] = next++;
                size[table[v]] = l;
            }
            next <<= 1;
        }
        return (code, size);
    }

    private static void EncodeBlock(BitWriter bits, float[] plane, int stride, int x0, int y0, int[] quantZigzag, ref int predictor,
        (int[] Code, int[] Size) dc, (int[] Code, int[] Size) ac, Action<int[]> tamper)
    {
        // Separable float forward DCT, quantised with rounding.
        Span<double> temp = stackalloc double[64];
        Span<double> coefficients = stackalloc double[64];
        for (int y = 0; y < 8; y++)
            for (int u = 0; u < 8; u++)
            {
                double sum = 0;
                for (int x = 0; x < 8; x++) sum += (plane[(y0 + y) * stride + x0 + x] - 128) * Math.Cos((2 * x + 1) * u * Math.PI / 16);
                temp[y * 8 + u] = sum * (u == 0 ? Math.Sqrt(0.5) : 1) / 2;
            }
        for (int u = 0; u < 8; u++)
            for (int v = 0; v < 8; v++)
            {
                double sum = 0;
                for (int y = 0; y < 8; y++) sum += temp[y * 8 + u] * Math.Cos((2 * y + 1) * v * Math.PI / 16);
                coefficients[v * 8 + u] = sum * (v == 0 ? Math.Sqrt(0.5) : 1) / 2;
            }
        int[] zigzag = new int[64];
        var natural = JpegRegionDecoder.Natural;
        for (int k = 0; k < 64; k++) zigzag[k] = (int)Math.Round(coefficients[natural[k]] / quantZigzag[k]);
        tamper(zigzag);

        int diff = zigzag[0] - predictor;
        predictor = zigzag[0];
        int s = Magnitude(diff);
        bits.Write(dc.Code[s], dc.Size[s]);
        if (s > 0) bits.Write(diff < 0 ? diff + (1 << s) - 1 : diff, s);
        int run = 0;
        for (int k = 1; k < 64; k++)
        {
            if (zigzag[k] == 0)
            {
                run++;
                continue;
            }
            for (; run > 15; run -= 16) bits.Write(ac.Code[0xF0], ac.Size[0xF0]);
            int value = zigzag[k], size = Magnitude(value), symbol = (run << 4) | size;
            bits.Write(ac.Code[symbol], ac.Size[symbol]);
            bits.Write(value < 0 ? value + (1 << size) - 1 : value, size);
            run = 0;
        }
        if (run > 0) bits.Write(ac.Code[0x00], ac.Size[0x00]);
    }

    private static int Magnitude(int value)
    {
        int a = Math.Abs(value), s = 0;
        while (a > 0) { s++; a >>= 1; }
        return s;
    }

    private sealed class BitWriter
    {
        public readonly List<byte> Bytes = [];
        private int buffer, count;

        public void Write(int value, int length)
        {
            for (int i = length - 1; i >= 0; i--)
            {
                buffer = (buffer << 1) | ((value >> i) & 1);
                if (++count == 8) Emit();
            }
        }

        /// <summary>Pads the last byte with 1 bits.</summary>
        public void Flush()
        {
            while (count != 0) Write(1, 1);
        }

        public void Marker(byte marker) => Bytes.AddRange([0xFF, marker]);

        private void Emit()
        {
            Bytes.Add((byte)buffer);
            if (buffer == 0xFF) Bytes.Add(0);
            buffer = count = 0;
        }
    }
}
