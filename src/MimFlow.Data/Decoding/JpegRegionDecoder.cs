using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MimFlow.Data.Decoding;

/// <summary>
/// A managed decoder for the common JPEG: baseline or extended sequential Huffman, 8-bit, one interleaved scan,
/// YCbCr with luma sampling 1×1, 2×1, 1×2 or 2×2 and chroma 1×1, decoded at full scale. It decodes only the MCU
/// rows down to the region's bottom and runs the IDCT, upsampling and colour conversion only for the blocks the
/// region (plus a one-MCU margin) touches; the entropy decoding of the rows above must still be done. Its pixels
/// are libjpeg-turbo's bit for bit (accurate integer IDCT, "fancy" triangle upsampling, table-driven YCbCr → RGB,
/// as libvips' jpegload gives them): tests compare every pixel with libvips. Anything else (progressive,
/// arithmetic, 12-bit, CMYK, grey, other samplings, restart or marker trouble, a scale other than 1) makes
/// <see cref="TryDecode"/> return false, and the caller decodes with libvips; <see cref="LastRefusal"/> says why.
/// </summary>
/// <remarks>
/// Why: libvips' jpegload costs about twice a plain libjpeg decode on 300–640-pixel images (per-call pipeline,
/// region and thread hand-off costs), more than the rest of the augmentation together. One instance per thread
/// (<see cref="ForThread"/>) keeps its planes between images, so a decode allocates nothing.
/// <para>Hostile input: every length, count, table id, sampling factor and size is checked where the headers are read,
/// before anything is sized from it; Huffman tables are complete 2048-entry lookups whatever the code set; the
/// entropy decoder reads through bounds-checked refills that supply zero bits past the end (consuming them refuses
/// the image); coefficient positions are checked against 63 before they are stored; the planes are sized in 64-bit
/// arithmetic and only after the entropy data was found long enough to cover the blocks (two bits at least each),
/// so a small file claiming a large image allocates nothing. Anything libjpeg would refuse, or decode differently
/// (sides over 65500, a short JFIF segment, coefficients past libjpeg-turbo's 16-bit lanes), is refused here too
/// and left to libvips.</para>
/// </remarks>
public sealed class JpegRegionDecoder
{
    [ThreadStatic] private static JpegRegionDecoder? perThread;

    /// <summary>This thread's decoder (planes and tables reused from image to image).</summary>
    public static JpegRegionDecoder ForThread => perThread ??= new JpegRegionDecoder();

    /// <summary>Process-wide switch (tests and benchmarks compare with libvips); on by default.</summary>
    public static bool Enabled { get; set; } = true;

    private readonly int[][] quant = new int[4][];
    private readonly HuffmanTable?[] dcTables = new HuffmanTable?[4];
    private readonly HuffmanTable?[] acTables = new HuffmanTable?[4];
    private readonly Component[] components = [new(), new(), new()];
    private byte[] planes = [];
    private readonly short[] blockBuffer = new short[64];
    private int componentCount, width, height, restartInterval, scanStart, hMax, vMax;
    private bool sawJfif, sawAdobe;
    private int adobeTransform;
    private int exifSegments, orientation;
    private bool exifReadable;

    /// <summary>libjpeg's largest image side (JPEG_MAX_DIMENSION): it refuses larger ones as a fatal error.</summary>
    public const int MaxSide = 65500;

    /// <summary>
    /// Why the last <see cref="TryDecode(ReadOnlySpan{byte}, int, int, int, int, Span{byte})"/>,
    /// <see cref="TryReadHeader"/> or <see cref="TryLumaMean"/> call returned false ("JPEG: …"), null after a success.
    /// For diagnostics: a refused image goes to libvips, whose verdict (and reason) is the one that counts.
    /// </summary>
    public string? LastRefusal { get; private set; }

    private bool Refuse(string reason)
    {
        LastRefusal = reason;
        return false;
    }

    /// <summary>The refusal for an exception from the decoding itself: damaged data, or (a bug) a failed bounds check.</summary>
    private bool Refuse(Exception e) =>
        Refuse(e is InvalidDataException ? "JPEG: " + e.Message : $"JPEG: internal bounds check failed ({e.GetType().Name}: {e.Message})");

    private sealed class Component
    {
        public int Id, H, V, QuantTable, DcTable, AcTable;
        // Window of this component's samples that is decoded: columns [X0, X0 + W), rows [Y0, Y0 + Rows).
        public int X0, Y0, W, Rows, PlaneOffset;
        public int SampledWidth, SampledHeight;
        public int DcPredictor;
    }

    private readonly List<HuffmanTable> builtTables = new(16);

    private sealed class HuffmanTable
    {
        public byte[] Definition = [];
        // 11-bit lookahead: (length << 8) | symbol, 0 when the code is longer.
        public readonly ushort[] Lookup = new ushort[1 << LookBits];
        public readonly int[] MaxCode = new int[18];
        public readonly int[] ValueOffset = new int[18];
        public readonly byte[] Values = new byte[256];
        // AC only: (value << 16) | (run << 8) | bits used, when code and magnitude fit the lookahead; else 0.
        public readonly int[] FastAc = new int[1 << LookBits];
    }

    private const int LookBits = 11;

    /// <summary>
    /// Decodes display pixels [<paramref name="left"/>, <paramref name="left"/> + <paramref name="regionWidth"/>) ×
    /// [<paramref name="top"/>, …) of <paramref name="encoded"/> as planar 8-bit RGB (three planes of width · height
    /// bytes) into <paramref name="rgb"/>, or returns false (nothing usable written) when this JPEG is not one the
    /// decoder handles exactly.
    /// </summary>
    public bool TryDecode(ReadOnlySpan<byte> encoded, int left, int top, int regionWidth, int regionHeight, Span<byte> rgb) =>
        TryDecode(encoded, left, top, regionWidth, regionHeight, rgb, false, out _);

    /// <summary>
    /// <see cref="TryDecode(ReadOnlySpan{byte}, int, int, int, int, Span{byte})"/>, and with
    /// <paramref name="wantLumaMean"/> also the mean grey of the whole image (<see cref="TryLumaMean"/>), the entropy
    /// decoding continuing past the region's rows to the end for it.
    /// </summary>
    public bool TryDecode(ReadOnlySpan<byte> encoded, int left, int top, int regionWidth, int regionHeight, Span<byte> rgb, bool wantLumaMean, out double lumaMean)
    {
        lumaMean = 0;
        LastRefusal = null;
        if (!Enabled) return Refuse("managed JPEG decoding is switched off");
        try
        {
            if (!ReadHeaders(encoded)) return false;
            // Unsigned and 64-bit comparisons: no sum here can wrap around.
            if (regionWidth < 1 || regionHeight < 1 || (uint)left >= (uint)width || (uint)top >= (uint)height || regionWidth > width - left || regionHeight > height - top)
                return Refuse($"JPEG: region {regionWidth}×{regionHeight} at ({left}, {top}) is not inside the {width}×{height} image");
            if (rgb.Length < 3L * regionWidth * regionHeight)
                return Refuse($"JPEG: an output of {rgb.Length:N0} bytes for a {regionWidth}×{regionHeight} RGB region");
            return DecodeScan(encoded, left, top, regionWidth, regionHeight, rgb, wantLumaMean, out lumaMean);
        }
        catch (Exception e) when (e is InvalidDataException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return Refuse(e);
        }
    }

    /// <summary>
    /// The header facts <see cref="ImageHeader"/> needs, without libvips, for the JPEGs this decoder handles: stored
    /// size and EXIF orientation (IFD0's tag 0x0112, as libvips reads it through libexif). False, and the caller asks
    /// libvips, for anything else, including a second or unreadable EXIF block.
    /// </summary>
    public bool TryReadHeader(ReadOnlySpan<byte> encoded, out int storedWidth, out int storedHeight, out int exifOrientation)
    {
        storedWidth = storedHeight = 0;
        exifOrientation = 1;
        LastRefusal = null;
        if (!Enabled) return Refuse("managed JPEG decoding is switched off");
        try
        {
            if (!ReadHeaders(encoded)) return false;
            if (exifSegments > 1) return Refuse($"JPEG: {exifSegments} EXIF blocks (libvips reads them)");
            if (!exifReadable) return Refuse("JPEG: an EXIF block whose orientation is not one plain SHORT in IFD0 (libvips reads it)");
        }
        catch (Exception e) when (e is InvalidDataException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return Refuse(e);
        }
        storedWidth = width;
        storedHeight = height;
        exifOrientation = orientation;
        return true;
    }

    /// <summary>
    /// The Orientation tag of a TIFF structure (EXIF without its "Exif\0\0" prefix): IFD0, tag 0x0112, type SHORT,
    /// count 1. No tag, or a value outside 1..8: orientation 1, as libvips reads it. Anything malformed: false. Only
    /// IFD0's entries are read (no offsets followed), so links between IFDs, loops included, play no part.
    /// </summary>
    internal static bool ExifOrientation(ReadOnlySpan<byte> tiff, out int value)
    {
        value = 1;
        if (tiff.Length < 8) return false;
        bool little = tiff[0] == 'I' && tiff[1] == 'I';
        if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return false;
        if (U16(tiff, 2, little) != 42) return false;
        uint ifd = U32(tiff, 4, little);
        if (ifd < 8 || ifd > tiff.Length - 2) return false;
        int entries = U16(tiff, (int)ifd, little);
        if (ifd + 2 + 12L * entries > tiff.Length) return false;
        for (int i = 0; i < entries; i++)
        {
            int at = (int)ifd + 2 + 12 * i;
            if (U16(tiff, at, little) != 0x0112) continue;
            if (U16(tiff, at + 2, little) != 3 || U32(tiff, at + 4, little) != 1) return false;
            value = U16(tiff, at + 8, little);
            if (value is < 1 or > 8) value = 1;
            return true;
        }
        return true;
    }

    private static ushort U16(ReadOnlySpan<byte> s, int at, bool little) =>
        little ? BinaryPrimitives.ReadUInt16LittleEndian(s[at..]) : BinaryPrimitives.ReadUInt16BigEndian(s[at..]);

    private static uint U32(ReadOnlySpan<byte> s, int at, bool little) =>
        little ? BinaryPrimitives.ReadUInt32LittleEndian(s[at..]) : BinaryPrimitives.ReadUInt32BigEndian(s[at..]);

    /// <summary>
    /// The mean grey of the whole image from its luma DC coefficients alone: each 8×8 luma block's mean
    /// (clamp(⌊(DC·q + 4) / 8⌋ + 128), libjpeg's 1/8-scale sample) averaged over the blocks inside the image. An entropy
    /// pass without IDCT; it stands for PIL's mean of L over the full-resolution image (ColorJitter's contrast centre)
    /// within rounding. Works whether or not <see cref="Enabled"/> (it decides nothing about pixels).
    /// </summary>
    public bool TryLumaMean(ReadOnlySpan<byte> encoded, out double mean)
    {
        mean = 0;
        LastRefusal = null;
        try
        {
            if (!ReadHeaders(encoded)) return false;
            return DecodeScan(encoded, 0, 0, 1, 1, [], true, out mean, pixels: false);
        }
        catch (Exception e) when (e is InvalidDataException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return Refuse(e);
        }
    }

    /// <summary>Reads markers up to the first SOS; false (with <see cref="LastRefusal"/>) for anything outside the supported subset.</summary>
    private bool ReadHeaders(ReadOnlySpan<byte> data)
    {
        componentCount = 0;
        restartInterval = 0;
        sawJfif = sawAdobe = false;
        exifSegments = 0;
        orientation = 1;
        exifReadable = true;
        Array.Clear(dcTables);
        Array.Clear(acTables);
        Array.Clear(quant);
        if (data.Length < 4 || data[0] != 0xFF || data[1] != 0xD8) return Refuse("JPEG: no start-of-image marker");
        int p = 2;
        bool frame = false;
        while (true)
        {
            if (p + 4 > data.Length) return Refuse($"JPEG: the file ends at byte {data.Length:N0}, inside the markers before the scan");
            if (data[p] != 0xFF) return Refuse($"JPEG: byte 0x{data[p]:X2} at {p:N0} where a marker should start");
            byte marker = data[p + 1];
            if (marker == 0xFF) { p++; continue; }
            // Markers without a length field: refused before their (absent) length is read.
            if (marker is >= 0xD0 and <= 0xD9 or 0x01 or 0x00)
                return Refuse(marker == 0xD9 ? "JPEG: end of image before any scan" : $"JPEG: marker FF{marker:X2} at {p:N0} before the scan");
            int length = BinaryPrimitives.ReadUInt16BigEndian(data[(p + 2)..]);
            if (length < 2 || p + 2 + length > data.Length)
                return Refuse($"JPEG: segment FF{marker:X2} at {p:N0} gives length {length}, {(length < 2 ? "below 2" : $"past the end of the file at {data.Length:N0}")}");
            var segment = data.Slice(p + 4, length - 2);
            switch (marker)
            {
                case 0xC0 or 0xC1:
                    if (frame) return Refuse("JPEG: a second frame header (SOF)");
                    if (!ReadFrame(segment)) return false;
                    frame = true;
                    break;
                case 0xC4:
                    if (!ReadHuffman(segment)) return false;
                    break;
                case 0xDB:
                    if (!ReadQuant(segment)) return false;
                    break;
                case 0xDD:
                    if (segment.Length != 2) return Refuse($"JPEG: a restart interval segment of {segment.Length} bytes (2 expected)");
                    restartInterval = BinaryPrimitives.ReadUInt16BigEndian(segment);
                    break;
                case 0xE0:
                    // libjpeg takes an APP0 as JFIF only when it holds the whole 14-byte JFIF header.
                    if (segment.Length >= 14 && segment[..5].SequenceEqual("JFIF\0"u8)) sawJfif = true;
                    break;
                case 0xE1:
                    if (segment.Length >= 6 && segment[..6].SequenceEqual("Exif\0\0"u8))
                    {
                        exifSegments++;
                        if (!ExifOrientation(segment[6..], out orientation)) exifReadable = false;
                    }
                    break;
                case 0xEE:
                    if (segment.Length >= 12 && segment[..5].SequenceEqual("Adobe"u8))
                    {
                        sawAdobe = true;
                        adobeTransform = segment[11];
                    }
                    break;
                case 0xDA:
                    if (!frame) return Refuse("JPEG: a scan before the frame header (SOS before SOF)");
                    if (!ReadScan(segment)) return false;
                    // libjpeg's colour-space guess for three components: YCbCr unless an Adobe marker says RGB (or
                    // something else) or, without JFIF and Adobe markers, the component ids spell R, G, B.
                    if (!sawJfif)
                    {
                        if (sawAdobe) { if (adobeTransform != 1) return Refuse($"JPEG: Adobe colour transform {adobeTransform} (not YCbCr)"); }
                        else if (components[0].Id == 'R' && components[1].Id == 'G' && components[2].Id == 'B')
                            return Refuse("JPEG: component ids R, G, B without a JFIF or Adobe marker (RGB, not YCbCr)");
                    }
                    scanStart = p + 2 + length;
                    return true;
                case >= 0xC2 and <= 0xCF:
                    return Refuse($"JPEG: {FrameKind(marker)} (marker FF{marker:X2})");
                case >= 0xE0 and <= 0xEF or 0xFE or 0xDC:
                    break; // other APPn, COM and DNL: skipped, as libjpeg skips them
                default:
                    // DHP, EXP, JPGn and the reserved markers: libjpeg stops with "Unsupported marker type".
                    return Refuse($"JPEG: marker FF{marker:X2} at {p:N0}, which libjpeg does not accept");
            }
            p += 2 + length;
        }
    }

    private static string FrameKind(byte marker) => marker switch
    {
        0xC2 => "progressive Huffman coding",
        0xC3 => "lossless Huffman coding",
        0xC5 or 0xC6 or 0xC7 => "hierarchical (differential) Huffman coding",
        0xC8 => "a reserved JPEG extension",
        0xC9 or 0xCA or 0xCB or 0xCD or 0xCE or 0xCF => "arithmetic coding",
        0xCC => "arithmetic coding conditioning",
        _ => "an unsupported frame type",
    };

    private bool ReadFrame(ReadOnlySpan<byte> s)
    {
        if (s.Length < 6) return Refuse($"JPEG: a frame header of {s.Length} bytes");
        if (s[0] != 8) return Refuse($"JPEG: {s[0]}-bit samples (only 8-bit ones are decoded here)");
        height = BinaryPrimitives.ReadUInt16BigEndian(s[1..]);
        width = BinaryPrimitives.ReadUInt16BigEndian(s[3..]);
        componentCount = s[5];
        if (width < 1 || height < 1) return Refuse($"JPEG: an image of {width}×{height} pixels");
        if (width > MaxSide || height > MaxSide) return Refuse($"JPEG: {width}×{height} pixels, past libjpeg's largest side of {MaxSide} pixels");
        if (componentCount != 3)
            return Refuse($"JPEG: {componentCount} component{(componentCount == 1 ? "" : "s")} (only 3-component YCbCr is decoded here)");
        if (s.Length != 6 + 3 * componentCount) return Refuse($"JPEG: a frame header of {s.Length} bytes for {componentCount} components");
        hMax = vMax = 1;
        for (int i = 0; i < componentCount; i++)
        {
            var c = components[i];
            c.Id = s[6 + 3 * i];
            c.H = s[7 + 3 * i] >> 4;
            c.V = s[7 + 3 * i] & 15;
            c.QuantTable = s[8 + 3 * i];
            if (c.QuantTable > 3) return Refuse($"JPEG: component {c.Id} uses quantisation table {c.QuantTable} (at most 3)");
            hMax = Math.Max(hMax, c.H);
            vMax = Math.Max(vMax, c.V);
        }
        // Luma 1×1, 2×1, 1×2 or 2×2; chroma 1×1.
        if (components[0].H is < 1 or > 2 || components[0].V is < 1 or > 2 || components[1].H != 1 || components[1].V != 1 || components[2].H != 1 || components[2].V != 1)
            return Refuse($"JPEG: sampling factors {components[0].H}×{components[0].V}, {components[1].H}×{components[1].V}, {components[2].H}×{components[2].V} (luma 1×1, 2×1, 1×2 or 2×2 with chroma 1×1 are decoded here)");
        for (int i = 0; i < componentCount; i++)
        {
            var c = components[i];
            c.SampledWidth = (int)(((long)width * c.H + hMax - 1) / hMax);
            c.SampledHeight = (int)(((long)height * c.V + vMax - 1) / vMax);
        }
        // libjpeg upsamples 2× "fancily" only when the chroma is wider than 2 samples; keep to that case.
        if (hMax == 2 && components[1].SampledWidth <= 2) return Refuse("JPEG: chroma of 2 samples or fewer across (libjpeg upsamples it without its triangle filter)");
        return true;
    }

    private bool ReadQuant(ReadOnlySpan<byte> s)
    {
        while (s.Length > 0)
        {
            int precision = s[0] >> 4, id = s[0] & 15;
            if (id > 3) return Refuse($"JPEG: quantisation table {id} (at most 3)");
            if (precision > 1) return Refuse($"JPEG: quantisation table {id} of precision {precision} (0 or 1)");
            int size = precision == 0 ? 64 : 128;
            if (s.Length < 1 + size) return Refuse($"JPEG: quantisation table {id} cut short ({s.Length - 1} of {size} bytes)");
            var table = quant[id] ??= new int[64];
            for (int k = 0; k < 64; k++)
                table[Natural[k]] = precision == 0 ? s[1 + k] : BinaryPrimitives.ReadUInt16BigEndian(s[(1 + 2 * k)..]);
            s = s[(1 + size)..];
        }
        return true;
    }

    private bool ReadHuffman(ReadOnlySpan<byte> s)
    {
        while (s.Length > 0)
        {
            if (s.Length < 17) return Refuse($"JPEG: a Huffman table definition cut short ({s.Length} bytes)");
            int tableClass = s[0] >> 4, id = s[0] & 15;
            if (tableClass > 1 || id > 3) return Refuse($"JPEG: Huffman table of class {tableClass}, id {id} (class 0 or 1, id 0 to 3)");
            int count = 0;
            for (int l = 1; l <= 16; l++) count += s[l];
            if (count > 256) return Refuse($"JPEG: Huffman table {id} with {count} codes (at most 256)");
            if (s.Length < 17 + count) return Refuse($"JPEG: Huffman table {id} of {count} codes cut short ({s.Length - 17} symbols in the segment)");
            var definition = s.Slice(0, 17 + count);
            HuffmanTable? table = null;
            foreach (var cached in builtTables)
                if (cached.Definition.AsSpan().SequenceEqual(definition)) { table = cached; break; }
            if (table is null)
            {
                // Most files of a dataset come from a few encoders with the same tables: build each once.
                table = new HuffmanTable { Definition = definition.ToArray() };
                if (Build(table, s.Slice(1, 16), s.Slice(17, count), dc: tableClass == 0) is { } problem)
                    return Refuse($"JPEG: {(tableClass == 0 ? "DC" : "AC")} Huffman table {id} {problem}");
                if (builtTables.Count == 16) builtTables.RemoveAt(0);
                builtTables.Add(table);
            }
            (tableClass == 0 ? dcTables : acTables)[id] = table;
            s = s[(17 + count)..];
        }
        return true;
    }

    /// <summary>libjpeg's jpeg_make_d_derived_tbl, with an 11-bit lookahead; null, or what is wrong with the code set.</summary>
    /// <remarks>
    /// Every table is a complete lookup whatever the file says: codes are checked to fit their lengths (an
    /// over-subscribed set is refused, as libjpeg refuses it), lookups have all 2048 entries (0 where no code of 11
    /// bits or fewer matches: a longer code, or none in an incomplete set, which <c>DecodeLong</c> refuses), and
    /// <see cref="HuffmanTable.Values"/> has all 256 entries, so an index from a bad code stays inside it.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static string? Build(HuffmanTable table, ReadOnlySpan<byte> bits, ReadOnlySpan<byte> values, bool dc)
    {
        Span<int> sizes = stackalloc int[257];
        Span<int> codes = stackalloc int[257];
        int p = 0;
        for (int l = 1; l <= 16; l++)
            for (int i = 0; i < bits[l - 1]; i++) sizes[p++] = l;
        sizes[p] = 0;
        int code = 0, si = sizes[0];
        p = 0;
        while (sizes[p] != 0)
        {
            while (sizes[p] == si) codes[p++] = code++;
            if (code >= 1 << si) return $"has more codes of {si} bits than fit (an over-subscribed code set)";
            code <<= 1;
            si++;
        }
        if (dc)
            foreach (byte v in values)
                if (v > 15) return $"holds the symbol {v} (DC differences have at most 15 bits)";
        p = 0;
        for (int l = 1; l <= 16; l++)
        {
            if (bits[l - 1] != 0)
            {
                table.ValueOffset[l] = p - codes[p];
                p += bits[l - 1];
                table.MaxCode[l] = codes[p - 1];
            }
            else table.MaxCode[l] = -1;
        }
        table.MaxCode[17] = int.MaxValue;
        values.CopyTo(table.Values);
        p = 0;
        for (int l = 1; l <= LookBits; l++)
            for (int i = 1; i <= bits[l - 1]; i++, p++)
            {
                int look = codes[p] << (LookBits - l);
                for (int n = 1 << (LookBits - l); n > 0; n--) table.Lookup[look++] = (ushort)((l << 8) | values[p]);
            }
        if (dc) return null;
        for (int look = 0; look < 1 << LookBits; look++)
        {
            int entry = table.Lookup[look];
            if (entry == 0) continue;
            int length = entry >> 8, run = (entry >> 4) & 15, size = entry & 15;
            if (size == 0)
            {
                // End of block (run 64 takes k past 63: the loop ends) and sixteen zeros (run 15, then the loop's k++).
                if (run == 0) table.FastAc[look] = (64 << 8) | length;
                else if (run == 15) table.FastAc[look] = (15 << 8) | length;
                continue;
            }
            if (length + size > LookBits) continue;
            int v = (look >> (LookBits - length - size)) & ((1 << size) - 1);
            if (v < 1 << (size - 1)) v -= (1 << size) - 1;
            table.FastAc[look] = (v << 16) | (run << 8) | (length + size);
        }
        return null;
    }

    private bool ReadScan(ReadOnlySpan<byte> s)
    {
        if (s.Length < 1 || s[0] != componentCount)
            return Refuse($"JPEG: a scan of {(s.Length < 1 ? 0 : s[0])} of the {componentCount} components (one interleaved scan of all of them is decoded here)");
        if (s.Length != 1 + 2 * componentCount + 3) return Refuse($"JPEG: a scan header of {s.Length} bytes for {componentCount} components");
        for (int i = 0; i < componentCount; i++)
        {
            int id = s[1 + 2 * i];
            var c = components[i];
            if (c.Id != id) return Refuse($"JPEG: scan component {i} is {id}, frame component {i} is {c.Id}");
            c.DcTable = s[2 + 2 * i] >> 4;
            c.AcTable = s[2 + 2 * i] & 15;
            if (c.DcTable > 3 || dcTables[c.DcTable] is null) return Refuse($"JPEG: DC Huffman table {c.DcTable} referenced by the scan is not defined");
            if (c.AcTable > 3 || acTables[c.AcTable] is null) return Refuse($"JPEG: AC Huffman table {c.AcTable} referenced by the scan is not defined");
            if (quant[c.QuantTable] is null) return Refuse($"JPEG: quantisation table {c.QuantTable} of component {c.Id} is not defined");
        }
        for (int i = 1; i < componentCount; i++)
            for (int j = 0; j < i; j++)
                if (components[j].Id == components[i].Id) return Refuse($"JPEG: component id {components[i].Id} appears twice");
        int ss = s[1 + 2 * componentCount], se = s[2 + 2 * componentCount], a = s[3 + 2 * componentCount];
        return ss == 0 && se == 63 && a == 0 || Refuse($"JPEG: a scan of coefficients {ss} to {se}, successive approximation 0x{a:X2} (sequential: 0 to 63, 0)");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private bool DecodeScan(ReadOnlySpan<byte> data, int left, int top, int regionWidth, int regionHeight, Span<byte> rgb, bool wantLumaMean, out double lumaMean, bool pixels = true)
    {
        lumaMean = 0;
        int mcuWidth = 8 * hMax, mcuHeight = 8 * vMax;
        int mcusAcross = (width + mcuWidth - 1) / mcuWidth, mcusDown = (height + mcuHeight - 1) / mcuHeight;
        // The MCU columns and rows the region needs, with one MCU of context around it for the upsampler.
        int mx0 = Math.Max(0, left / mcuWidth - 1), mx1 = Math.Min(mcusAcross, (left + regionWidth + mcuWidth - 1) / mcuWidth + 1);
        int my0 = Math.Max(0, top / mcuHeight - 1), my1 = Math.Min(mcusDown, (top + regionHeight + mcuHeight - 1) / mcuHeight + 1);
        int rowsDecoded = wantLumaMean ? mcusDown : my1;
        // Every block takes at least two bits (a DC code and an AC code of one bit or more), so entropy data too short
        // for the MCU rows to decode would run out anyway: refuse before sizing anything from the claimed image size.
        int blocksPerMcu = 0;
        for (int i = 0; i < componentCount; i++) blocksPerMcu += components[i].H * components[i].V;
        long blocks = (long)rowsDecoded * mcusAcross * blocksPerMcu, dataBits = 8L * (data.Length - scanStart);
        if (2 * blocks > dataBits)
            return Refuse($"JPEG: {data.Length - scanStart:N0} bytes of entropy data cannot hold the {blocks:N0} blocks of {width}×{height} pixels to decode (two bits at least each)");
        long total = 0;
        for (int i = 0; i < componentCount; i++)
        {
            var c = components[i];
            c.X0 = mx0 * 8 * c.H;
            c.Y0 = my0 * 8 * c.V;
            c.W = (mx1 - mx0) * 8 * c.H;
            c.Rows = (my1 - my0) * 8 * c.V;
            c.PlaneOffset = (int)Math.Min(total, int.MaxValue);
            c.DcPredictor = 0;
            total += (long)c.W * c.Rows;
        }
        if (total > Array.MaxLength) return Refuse($"JPEG: the planes of a {regionWidth}×{regionHeight} region would take {total:N0} bytes");
        if (planes.Length < total) planes = new byte[Math.Min(Math.Max(total, 2L * planes.Length), Array.MaxLength)];

        // The entropy decoder's state lives in locals of this one method (refills and block decoding inlined), so
        // the JIT keeps it in registers.
        ulong buffer = 0;
        int bits = 0, position = scanStart, padding = 0;
        bool ended = false;
        short[] block = blockBuffer;
        int restartsLeft = restartInterval, nextRestart = 0;
        // The luma mean: blocks inside the luma plane (libjpeg's 1/8-scale output covers ⌈w/8⌉ × ⌈h/8⌉ of them).
        int lumaBlocksAcross = (components[0].SampledWidth + 7) / 8, lumaBlocksDown = (components[0].SampledHeight + 7) / 8;
        long lumaSum = 0;
        int[] lumaQuant = quant[components[0].QuantTable];
        for (int my = 0; my < rowsDecoded; my++)
        {
            bool rowNeeded = pixels && my >= my0 && my < my1;
            for (int mx = 0; mx < mcusAcross; mx++)
            {
                if (restartInterval > 0)
                {
                    if (restartsLeft == 0)
                    {
                        if (bits < padding) ThrowEndedEarly(my);
                        (buffer, bits, position, padding, ended) = RefillBytes(data, buffer, bits, position, padding, ended);
                        // Only the fill bits of the last byte may remain before the marker.
                        if (!ended || bits - padding >= 8 || position + 1 >= data.Length || data[position] != 0xFF || data[position + 1] != 0xD0 + nextRestart)
                            ThrowRestartMissing(nextRestart, my * mcusAcross + mx);
                        position += 2;
                        buffer = 0;
                        bits = padding = 0;
                        ended = false;
                        nextRestart = (nextRestart + 1) & 7;
                        restartsLeft = restartInterval;
                        for (int i = 0; i < componentCount; i++) components[i].DcPredictor = 0;
                    }
                    restartsLeft--;
                }
                bool needed = rowNeeded && mx >= mx0 && mx < mx1;
                for (int i = 0; i < componentCount; i++)
                {
                    var c = components[i];
                    var dc = dcTables[c.DcTable]!;
                    var ac = acTables[c.AcTable]!;
                    // Indices below are bounded by construction (11-bit lookups into 2048-entry tables, k ≤ 63 checked,
                    // natural positions < 64), so the loop reads through refs without bounds checks.
                    ref ushort dcLookup = ref MemoryMarshal.GetArrayDataReference(dc.Lookup);
                    ref ushort acLookup = ref MemoryMarshal.GetArrayDataReference(ac.Lookup);
                    ref int fastAc = ref MemoryMarshal.GetArrayDataReference(ac.FastAc);
                    ref byte natural = ref MemoryMarshal.GetReference(Natural);
                    ref short coefficients = ref MemoryMarshal.GetArrayDataReference(block);
                    for (int by = 0; by < c.V; by++)
                        for (int bx = 0; bx < c.H; bx++)
                        {
                            if (needed) Array.Clear(block);
                            // DC: a difference from the previous block's DC.
                            if (bits < 32) Refill(data, ref buffer, ref bits, ref position, ref padding, ref ended);
                            int entry = Unsafe.Add(ref dcLookup, (int)(buffer >> (64 - LookBits)));
                            if (entry == 0) entry = DecodeLong(dc, buffer);
                            buffer <<= entry >> 8;
                            bits -= entry >> 8;
                            int symbol = entry & 0xFF;
                            if (symbol != 0)
                            {
                                int v = (int)(buffer >> (64 - symbol));
                                buffer <<= symbol;
                                bits -= symbol;
                                c.DcPredictor += v < (1 << (symbol - 1)) ? v - (1 << symbol) + 1 : v;
                            }
                            block[0] = (short)c.DcPredictor;
                            if (wantLumaMean && i == 0 && mx * c.H + bx < lumaBlocksAcross && my * c.V + by < lumaBlocksDown)
                                lumaSum += Math.Clamp(((block[0] * lumaQuant[0] + 4) >> 3) + 128, 0, 255);
                            int last = 0;
                            for (int k = 1; k < 64; k++)
                            {
                                if (bits < 32) Refill(data, ref buffer, ref bits, ref position, ref padding, ref ended);
                                int look = (int)(buffer >> (64 - LookBits));
                                int fast = Unsafe.Add(ref fastAc, look);
                                if (fast != 0)
                                {
                                    // Code and magnitude bits within the lookahead: the value comes from the table.
                                    int skip = (fast >> 8) & 0xFF;
                                    k += skip;
                                    buffer <<= fast & 0xFF;
                                    bits -= fast & 0xFF;
                                    if (k > 63)
                                    {
                                        if (skip == 64) break; // end of block
                                        ThrowPast63();
                                    }
                                    int value = fast >> 16;
                                    if (value != 0)
                                    {
                                        Unsafe.Add(ref coefficients, Unsafe.Add(ref natural, k)) = (short)value;
                                        last = k;
                                    }
                                    continue;
                                }
                                entry = Unsafe.Add(ref acLookup, look);
                                if (entry == 0) entry = DecodeLong(ac, buffer);
                                buffer <<= entry >> 8;
                                bits -= entry >> 8;
                                symbol = entry & 0xFF;
                                int run = symbol >> 4, size = symbol & 15;
                                if (size != 0)
                                {
                                    k += run;
                                    if (k > 63) ThrowPast63();
                                    int v = (int)(buffer >> (64 - size));
                                    buffer <<= size;
                                    bits -= size;
                                    Unsafe.Add(ref coefficients, Unsafe.Add(ref natural, k)) = (short)(v < (1 << (size - 1)) ? v - (1 << size) + 1 : v);
                                    last = k;
                                }
                                else
                                {
                                    if (run != 15) break;
                                    k += 15;
                                }
                            }
                            if (!needed) continue;
                            int x = (mx - mx0) * 8 * c.H + 8 * bx, y = (my - my0) * 8 * c.V + 8 * by;
                            var target = planes.AsSpan(c.PlaneOffset + y * c.W + x);
                            if (last == 0) FillDc(block[0] * quant[c.QuantTable][0], target, c.W);
                            else if (!InverseDct.Islow(block, quant[c.QuantTable], target, c.W)) ThrowPast16Bits();
                        }
                }
                if (bits < padding) ThrowEndedEarly(my);
            }
        }

        lumaMean = wantLumaMean ? (double)lumaSum / ((long)lumaBlocksAcross * lumaBlocksDown) : 0;
        if (pixels) Render(left, top, regionWidth, regionHeight, rgb);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FillDc(int dequantized, Span<byte> target, int stride)
    {
        // libjpeg-turbo's SIMD IDCT shifts a DC-only block's dequantised DC left by 2 in a 16-bit lane: beyond
        // [−8192, 8191] it wraps, and only damaged data gets there (see InverseDct).
        if ((uint)(dequantized + 8192) > 16383) ThrowPast16Bits();
        if (stride < 8 || target.Length < 7 * stride + 8) throw new ArgumentOutOfRangeException(nameof(target));
        // The islow IDCT of a DC-only block: pass 1 gives dc << 2, pass 2 descales by 5 bits, +128 and clamped.
        int value = ((dequantized << 2) + 16) >> 5;
        byte v = (byte)Math.Clamp(value + 128, 0, 255);
        var row = Vector64.Create(v);
        ref byte first = ref MemoryMarshal.GetReference(target);
        for (int y = 0; y < 8; y++) row.StoreUnsafe(ref first, (nuint)(y * stride));
    }

    // Throw helpers keep the hot loop's code small; the messages become LastRefusal ("JPEG: …").
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowEndedEarly(int mcuRow) =>
        throw new InvalidDataException($"the entropy data runs out in MCU row {mcuRow} (cut short, or interrupted by a marker)");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowRestartMissing(int expected, int mcu) =>
        throw new InvalidDataException($"restart marker RST{expected} missing before MCU {mcu}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowPast63() => throw new InvalidDataException("a run of coefficients past position 63 of a block");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowPast16Bits() =>
        throw new InvalidDataException("coefficients past the 16-bit range of libjpeg-turbo's IDCT (damaged entropy data)");

    /// <summary>
    /// Tops the bit buffer up to more than 32 bits: 4 bytes at once when none of them is 0xFF, else byte by byte
    /// (stuffed FF 00 → FF; a marker or the end of the data ends the entropy data, and zero bits are supplied after
    /// it, counted in <paramref name="padding"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Refill(ReadOnlySpan<byte> data, ref ulong buffer, ref int bits, ref int position, ref int padding, ref bool ended)
    {
        if (!ended && position + 4 <= data.Length)
        {
            uint word = BinaryPrimitives.ReadUInt32BigEndian(data.Slice(position, 4));
            uint inverted = ~word;
            if (((inverted - 0x01010101u) & ~inverted & 0x80808080u) == 0)
            {
                buffer |= (ulong)word << (32 - bits);
                bits += 32;
                position += 4;
                return;
            }
        }
        (buffer, bits, position, padding, ended) = RefillBytes(data, buffer, bits, position, padding, ended);
    }

    /// <summary>The byte-by-byte refill. Takes and returns the state by value: the caller's locals never have their
    /// address taken, so the JIT keeps them in registers.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static (ulong Buffer, int Bits, int Position, int Padding, bool Ended) RefillBytes(ReadOnlySpan<byte> data, ulong buffer, int bits, int position, int padding, bool ended)
    {
        while (bits <= 56)
        {
            uint b = 0;
            if (!ended)
            {
                if (position < data.Length)
                {
                    b = data[position];
                    if (b == 0xFF)
                    {
                        if (position + 1 < data.Length && data[position + 1] == 0) position += 2;
                        else
                        {
                            ended = true;
                            b = 0;
                        }
                    }
                    else position++;
                }
                else ended = true;
            }
            if (ended) padding += 8;
            buffer |= (ulong)b << (56 - bits);
            bits += 8;
        }
        return (buffer, bits, position, padding, ended);
    }

    /// <summary>A Huffman code longer than the lookahead (libjpeg's jpeg_huff_decode).</summary>
    /// <returns>(length << 8) | symbol.</returns>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int DecodeLong(HuffmanTable table, ulong buffer)
    {
        int l = LookBits + 1;
        int code = (int)(buffer >> (64 - l));
        while (l <= 16 && code > table.MaxCode[l])
        {
            l++;
            code = (int)(buffer >> (64 - l));
        }
        if (l > 16) throw new InvalidDataException("a Huffman code that matches no symbol");
        int index = code + table.ValueOffset[l];
        if ((uint)index > 255) throw new InvalidDataException("a Huffman code that matches no symbol");
        return (l << 8) | table.Values[index];
    }

    /// <summary>
    /// Upsample (libjpeg's fancy triangle filter, edges replicated) and convert the region to RGB, written as three
    /// planes (R, G, B) of <paramref name="regionWidth"/> × <paramref name="regionHeight"/> bytes each.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void Render(int left, int top, int regionWidth, int regionHeight, Span<byte> planar)
    {
        var luma = components[0];
        int plane = regionWidth * regionHeight;
        int[] cbRow = ArrayPool<int>.Shared.Rent(regionWidth + 24), crRow = ArrayPool<int>.Shared.Rent(regionWidth + 24);
        int[] sums = ArrayPool<int>.Shared.Rent(regionWidth / 2 + 24);
        try
        {
            for (int y = 0; y < regionHeight; y++)
            {
                int sy = top + y;
                int lumaRow = luma.PlaneOffset + (sy - luma.Y0) * luma.W - luma.X0 + left;
                int offsetCb = UpsampleRow(components[1], sy, left, regionWidth, cbRow, sums);
                int offsetCr = UpsampleRow(components[2], sy, left, regionWidth, crRow, sums);
                ColorConvert.Row(planes.AsSpan(lumaRow, regionWidth), cbRow.AsSpan(offsetCb, regionWidth), crRow.AsSpan(offsetCr, regionWidth),
                    planar.Slice(y * regionWidth, regionWidth), planar.Slice(plane + y * regionWidth, regionWidth), planar.Slice(2 * plane + y * regionWidth, regionWidth));
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(cbRow);
            ArrayPool<int>.Shared.Return(crRow);
            ArrayPool<int>.Shared.Return(sums);
        }
    }

    /// <summary>
    /// The chroma of luma row <paramref name="sy"/>, columns [left, left + count), at luma resolution, written to
    /// <paramref name="output"/> from the returned offset on.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private int UpsampleRow(Component c, int sy, int left, int count, int[] output, int[] sums)
    {
        byte[] p = planes;
        int last = c.SampledWidth - 1;
        int nearRow, farRow;
        int vertical; // 0: no vertical filter; else the bias of the 3:1 vertical blend (h1v2) or 2 (h2v2: in the column sums)
        // The rows and columns read must lie in the decoded window (they do by construction; checked once a row, as
        // the vector loop below reads through refs).
        if (vMax == 1)
        {
            if ((uint)(sy - c.Y0) >= (uint)c.Rows) ThrowOutsideWindow();
            nearRow = farRow = c.PlaneOffset + (sy - c.Y0) * c.W - c.X0;
            vertical = 0;
        }
        else
        {
            // Vertical 2×: the nearer chroma row weighs 3, the further 1 (above for even rows, below for odd; edges replicated).
            int cy = sy >> 1;
            int far = (sy & 1) == 0 ? Math.Max(cy - 1, 0) : Math.Min(cy + 1, c.SampledHeight - 1);
            if ((uint)(cy - c.Y0) >= (uint)c.Rows || (uint)(far - c.Y0) >= (uint)c.Rows) ThrowOutsideWindow();
            nearRow = c.PlaneOffset + (cy - c.Y0) * c.W - c.X0;
            farRow = c.PlaneOffset + (far - c.Y0) * c.W - c.X0;
            vertical = (sy & 1) == 0 ? 1 : 2;
        }
        if (hMax == 1)
        {
            if (vertical == 0)
                for (int x = 0; x < count; x++) output[x] = p[nearRow + left + x];
            else
                for (int x = 0; x < count; x++)
                {
                    int sx = left + x;
                    output[x] = (3 * p[nearRow + sx] + p[farRow + sx] + vertical) >> 2;
                }
            return 0;
        }
        // Horizontal 2×: chroma columns c0 .. c1 cover the output from the even column at or before left; sums[k]
        // holds column c0 − 1 + k (clamped at the image edges), as 3·near + far (h2v2) or the sample itself (h2v1).
        int c0 = left >> 1, c1 = (left + count - 1) >> 1;
        int n = c1 - c0 + 1;
        int inside = Math.Max(0, 1 - c0), insideEnd = Math.Min(n + 2, last - c0 + 2); // k whose column needs no clamping
        if (n < 1 || sums.Length < n + 10 || output.Length < 2 * n + 16) throw new ArgumentOutOfRangeException(nameof(count));
        for (int k = 0; k < inside; k++) sums[k] = ColumnSum(p, nearRow, farRow, Math.Clamp(c0 - 1 + k, 0, last), vertical);
        int j = inside;
        if (Vector256.IsHardwareAccelerated && insideEnd - inside >= 8)
        {
            // Columns c0 − 1 + inside .. c0 − 1 + insideEnd − 1 are read 8 at a time.
            if (c0 - 1 + inside < c.X0 || c0 - 1 + insideEnd > c.X0 + c.W) ThrowOutsideWindow();
            ref byte near = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(p), nearRow + c0 - 1);
            ref byte farRef = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(p), farRow + c0 - 1);
            ref int sum = ref MemoryMarshal.GetArrayDataReference(sums);
            for (; j + 8 <= insideEnd; j += 8)
            {
                var a = Widen8(ref near, j);
                var v = vertical == 0 ? a : a * 3 + Widen8(ref farRef, j);
                v.StoreUnsafe(ref sum, (nuint)j);
            }
        }
        for (; j < n + 2; j++) sums[j] = ColumnSum(p, nearRow, farRow, Math.Clamp(c0 - 1 + j, 0, last), vertical);
        if (vertical == 0) ChromaUpsample.H2(sums, n, output, 1, 2, 2);
        else ChromaUpsample.H2(sums, n, output, 8, 7, 4);
        return left & 1;
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOutsideWindow() => throw new IndexOutOfRangeException("chroma context outside the decoded window");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ColumnSum(byte[] p, int nearRow, int farRow, int cx, int vertical) =>
        vertical == 0 ? p[nearRow + cx] : 3 * p[nearRow + cx] + p[farRow + cx];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Widen8(ref byte row, int offset)
    {
        var bytes = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref row, offset))).AsByte();
        var shorts = Vector128.WidenLower(bytes);
        return Vector256.Create(Vector128.WidenLower(shorts), Vector128.WidenUpper(shorts)).AsInt32();
    }

    /// <summary>Zig-zag position → natural (row-major) position.</summary>
    internal static ReadOnlySpan<byte> Natural =>
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
        28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
        54, 47, 55, 62, 63,
    ];
}
