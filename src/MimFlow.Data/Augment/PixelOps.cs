using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json.Serialization;

namespace MimFlow.Data.Augment;

/// <summary>
/// One pixel operation on an 8-bit RGB view, with its drawn arguments, as PIL / torchvision / timm define it. The
/// records serialise to JSON (<c>"op"</c> names the kind), so the whole augmentation of a sample can be stored and
/// replayed.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "op")]
[JsonDerivedType(typeof(Brightness), "brightness")]
[JsonDerivedType(typeof(Contrast), "contrast")]
[JsonDerivedType(typeof(Saturation), "saturation")]
[JsonDerivedType(typeof(Hue), "hue")]
[JsonDerivedType(typeof(Grayscale), "grayscale")]
[JsonDerivedType(typeof(GaussianBlur), "gaussian_blur")]
[JsonDerivedType(typeof(Solarize), "solarize")]
[JsonDerivedType(typeof(SolarizeAdd), "solarize_add")]
[JsonDerivedType(typeof(Posterize), "posterize")]
[JsonDerivedType(typeof(Invert), "invert")]
[JsonDerivedType(typeof(AutoContrast), "auto_contrast")]
[JsonDerivedType(typeof(Equalize), "equalize")]
[JsonDerivedType(typeof(Sharpness), "sharpness")]
[JsonDerivedType(typeof(Affine), "affine")]
[JsonDerivedType(typeof(PhotometricShift), "photometric_shift")]
public abstract record PixelOp
{
    public abstract void Apply(RgbImage image);

    /// <summary>
    /// The same operation on planar pixels, giving the same bytes as <see cref="Apply(RgbImage)"/>. The per-pixel
    /// operations of the pretraining recipes override it (vectorised or table-driven); the rest go through an
    /// interleaved copy.
    /// </summary>
    public virtual void Apply(PlanarImage image)
    {
        byte[] rgb = System.Buffers.ArrayPool<byte>.Shared.Rent(image.Length);
        try
        {
            image.ToInterleaved(rgb);
            Apply(new RgbImage(rgb, image.Width, image.Height));
            image.FromInterleaved(rgb.AsSpan(0, image.Length));
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rgb);
        }
    }

    internal static byte Clip(double value) => (byte)Math.Clamp((int)Math.Round(value, MidpointRounding.AwayFromZero), 0, 255);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static void Lookup(Span<byte> values, ReadOnlySpan<byte> table)
    {
        int i = 0;
        if (System.Runtime.Intrinsics.X86.Avx512Vbmi.IsSupported && values.Length >= 64 && table.Length >= 256)
        {
            // 64 lookups at once: two 128-byte permutes (vpermi2b) and a select on the index's top bit; same bytes.
            var t0 = System.Runtime.Intrinsics.Vector512.Create(table[..64]);
            var t1 = System.Runtime.Intrinsics.Vector512.Create(table.Slice(64, 64));
            var t2 = System.Runtime.Intrinsics.Vector512.Create(table.Slice(128, 64));
            var t3 = System.Runtime.Intrinsics.Vector512.Create(table.Slice(192, 64));
            ref byte start = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(values);
            for (; i + 64 <= values.Length; i += 64)
            {
                var index = System.Runtime.Intrinsics.Vector512.LoadUnsafe(ref start, (nuint)i);
                var low = System.Runtime.Intrinsics.X86.Avx512Vbmi.PermuteVar64x8x2(t0, index, t1);
                var high = System.Runtime.Intrinsics.X86.Avx512Vbmi.PermuteVar64x8x2(t2, index, t3);
                var upperHalf = System.Runtime.Intrinsics.Vector512.LessThan(index.AsSByte(), System.Runtime.Intrinsics.Vector512<sbyte>.Zero).AsByte();
                System.Runtime.Intrinsics.Vector512.ConditionalSelect(upperHalf, high, low).StoreUnsafe(ref start, (nuint)i);
            }
        }
        for (; i < values.Length; i++) values[i] = table[values[i]];
    }

    /// <summary>Eight bytes of a plane as doubles (AVX2 + AVX-512F).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static Vector512<double> Load8(ReadOnlySpan<byte> plane, int i) =>
        Avx512F.ConvertToVector512Double(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(BinaryPrimitives.ReadUInt64LittleEndian(plane.Slice(i, 8))).AsByte()));

    /// <summary><c>(byte)Math.Clamp((int)value, 0, 255)</c> on eight values (finite, within the int range): truncation towards zero, then 0..255.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void Store8(Vector512<double> values, Span<byte> plane, int i)
    {
        var truncated = Vector256.Min(Vector256.Max(Avx512F.ConvertToVector256Int32WithTruncation(values), Vector256<int>.Zero), Vector256.Create(255));
        var words = Vector128.Narrow(truncated.GetLower(), truncated.GetUpper());
        var bytes = Vector128.Narrow(words, words).AsByte();
        BinaryPrimitives.WriteUInt64LittleEndian(plane.Slice(i, 8), bytes.AsUInt64().ToScalar());
    }

    /// <summary><see cref="Clip"/> on eight values (finite, within the int range): rounded half away from zero, then 0..255.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void StoreRounded8(Vector512<double> values, Span<byte> plane, int i)
    {
        // t + sign where |v − t| ≥ ½, t = v truncated: v − t is exact, so no sum rounds up a value just below a half.
        var truncated = Vector512.Truncate(values);
        var half = Vector512.GreaterThanOrEqual(Vector512.Abs(values - truncated), Vector512.Create(0.5));
        var away = Vector512.ConditionalSelect(Vector512.LessThan(values, Vector512<double>.Zero), Vector512.Create(-1.0), Vector512.Create(1.0));
        Store8(truncated + (away & half), plane, i);
    }

    /// <summary>
    /// C's fmod(x, m) for 0 ≤ x &lt; 2m: x − m is exact there (Sterbenz), so this is the same double without the
    /// library call. Only for arguments known to be in range.
    /// </summary>
    internal static double Wrap(double x, double m) => x >= m ? x - m : x;

    /// <summary>PIL's RGB → L conversion (ITU-R 601-2 luma, fixed point).</summary>
    public static int Luma(byte r, byte g, byte b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

/// <summary>PIL ImageEnhance.Brightness: blend with black, v·factor.</summary>
public sealed record Brightness(double Factor) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = Clip(v * Factor);
        Lookup(image.Pixels, table);
    }

    public override void Apply(PlanarImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = Clip(v * Factor);
        Lookup(image.Pixels, table);
    }
}

/// <summary>
/// PIL ImageEnhance.Contrast: blend with the mean grey of the image. <see cref="WholeImage"/>: the mean is that of the
/// whole source image (BEiT jitters before cropping), which the renderer supplies (<see cref="Apply(PlanarImage, double)"/>);
/// otherwise, and when applied alone, the mean of the view itself (recipes that jitter after the crop).
/// </summary>
public sealed record Contrast(double Factor) : PixelOp
{
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public bool WholeImage { get; init; }

    /// <summary>Blend with a given mean grey (rounded as PIL rounds the image mean).</summary>
    public void Apply(PlanarImage image, double mean)
    {
        mean = Math.Floor(mean + 0.5);
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = Clip(mean + Factor * (v - mean));
        Lookup(image.Pixels, table);
    }

    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        long sum = 0;
        for (int i = 0; i < pixels.Length; i += 3) sum += Luma(pixels[i], pixels[i + 1], pixels[i + 2]);
        double mean = Math.Floor((double)sum / (pixels.Length / 3) + 0.5);
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = Clip(mean + Factor * (v - mean));
        Lookup(pixels, table);
    }

    public override void Apply(PlanarImage image)
    {
        long sum = PlanarKernels.LumaSum(image.Plane(0), image.Plane(1), image.Plane(2));
        double mean = Math.Floor((double)sum / image.PlaneLength + 0.5);
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = Clip(mean + Factor * (v - mean));
        Lookup(image.Pixels, table);
    }
}

/// <summary>PIL ImageEnhance.Color (torchvision's saturation): blend with the pixel's own grey.</summary>
public sealed record Saturation(double Factor) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        int factor = (int)Math.Round(Factor * 65536);
        for (int i = 0; i < pixels.Length; i += 3)
        {
            int grey = Luma(pixels[i], pixels[i + 1], pixels[i + 2]);
            int greyFixed = (grey << 16) + 0x8000;
            pixels[i] = ClipFixed(greyFixed + factor * (pixels[i] - grey));
            pixels[i + 1] = ClipFixed(greyFixed + factor * (pixels[i + 1] - grey));
            pixels[i + 2] = ClipFixed(greyFixed + factor * (pixels[i + 2] - grey));
        }
    }

    private static byte ClipFixed(int value) => (byte)Math.Clamp(value >> 16, 0, 255);

    public override void Apply(PlanarImage image) =>
        PlanarKernels.Saturate(image.Plane(0), image.Plane(1), image.Plane(2), (int)Math.Round(Factor * 65536));
}

/// <summary>torchvision adjust_hue on PIL images: shift H of PIL's 8-bit HSV by <see cref="Shift"/>·255 (wrapping).</summary>
public sealed record Hue(double Shift) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        int delta = (int)Math.Round(Shift * 255);
        for (int i = 0; i < pixels.Length; i += 3)
        {
            var (h, s, v) = ToHsv(pixels[i], pixels[i + 1], pixels[i + 2]);
            (pixels[i], pixels[i + 1], pixels[i + 2]) = FromHsv((byte)(h + delta), s, v);
        }
    }

    /// <summary>PIL's rgb2hsv (all channels 0..255).</summary>
    internal static (byte H, byte S, byte V) ToHsv(byte r, byte g, byte b)
    {
        int max = Math.Max(r, Math.Max(g, b)), min = Math.Min(r, Math.Min(g, b));
        if (max == min) return (0, 0, (byte)max);
        double cr = max - min;
        double s = cr / max;
        double rc = (max - r) / cr, gc = (max - g) / cr, bc = (max - b) / cr;
        double h = r == max ? bc - gc : g == max ? 2.0 + rc - bc : 4.0 + gc - rc;
        h = Wrap(h / 6.0 + 1.0, 1.0); // h / 6 + 1 is in [5/6, 11/6): fmod by one subtraction, exact
        return ((byte)Math.Clamp((int)(h * 255), 0, 255), (byte)Math.Clamp((int)(s * 255), 0, 255), (byte)max);
    }

    /// <summary>PIL's hsv2rgb: the shared sector formula, each channel rounded to a byte.</summary>
    internal static (byte R, byte G, byte B) FromHsv(byte hue, byte saturation, byte value)
    {
        if (saturation == 0) return (value, value, value);
        var (r, g, b) = HsvToRgb(hue / 255.0, saturation / 255.0, value);
        return (ToByte(r), ToByte(g), ToByte(b));
    }

    private static byte ToByte(double value) => (byte)Math.Clamp((int)Math.Round(value), 0, 255);

    /// <summary>MimFlow.Core's HsvToRgb with its two <c>% 1</c> done as exact subtractions (the same doubles, no fmod
    /// call): hue is in [0, 1] here.</summary>
    private static (double R, double G, double B) HsvToRgb(double hue, double saturation, double value) =>
        MimFlow.Core.Imaging.ColorSpace.HsvSixthsToRgb(Wrap(Wrap(hue, 1) + 1, 1) * 6, saturation, value);

    /// <summary>The same conversion four pixels at a time in double precision (the same operations and roundings,
    /// so the same bytes; tested against the interleaved code).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public override void Apply(PlanarImage image)
    {
        var red = image.Plane(0);
        var green = image.Plane(1);
        var blue = image.Plane(2);
        int delta = (int)Math.Round(Shift * 255);
        int i = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported && Avx2.IsSupported)
            for (; i + 8 <= red.Length; i += 8) Step8(red, green, blue, i, delta);
        if (Vector256.IsHardwareAccelerated)
            for (; i + 4 <= red.Length; i += 4) Step4(red, green, blue, i, delta);
        for (; i < red.Length; i++)
        {
            var (h, s, v) = ToHsv(red[i], green[i], blue[i]);
            (red[i], green[i], blue[i]) = FromHsv((byte)(h + delta), s, v);
        }
    }

    /// <summary><see cref="Step4"/> eight pixels at a time, bytes widened and narrowed in registers (AVX-512).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void Step8(Span<byte> red, Span<byte> green, Span<byte> blue, int i, int delta)
    {
        var r = Load8(red, i);
        var g = Load8(green, i);
        var b = Load8(blue, i);
        var zero = Vector512<double>.Zero;
        var one = Vector512.Create(1.0);
        var byteMax = Vector512.Create(255.0);
        // ToHsv
        var max = Vector512.Max(r, Vector512.Max(g, b));
        var min = Vector512.Min(r, Vector512.Min(g, b));
        var grey = Vector512.Equals(max, min);
        var cr = max - min;
        var sat = cr / max;
        var rc = (max - r) / cr;
        var gc = (max - g) / cr;
        var bc = (max - b) / cr;
        var h = Vector512.ConditionalSelect(Vector512.Equals(r, max), bc - gc,
            Vector512.ConditionalSelect(Vector512.Equals(g, max), Vector512.Create(2.0) + rc - bc, Vector512.Create(4.0) + gc - rc));
        h = h / Vector512.Create(6.0) + one;
        h = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(h, one), h - one, h);
        var hueByte = Vector512.ConditionalSelect(grey, zero, Vector512.Min(Vector512.Max(Vector512.Floor(h * byteMax), zero), byteMax));
        var satByte = Vector512.ConditionalSelect(grey, zero, Vector512.Min(Vector512.Max(Vector512.Floor(sat * byteMax), zero), byteMax));
        // (byte)(h + delta): modulo 256 on integers, exact in doubles
        var shifted = hueByte + Vector512.Create((double)delta);
        var wrap = Vector512.Create(256.0);
        shifted -= wrap * Vector512.Floor(shifted * Vector512.Create(1.0 / 256)); // x / 256 exactly: a power of two
        // FromHsv → HsvToRgb(hue / 255, sat / 255, value)
        var hue = shifted / byteMax;
        var s = satByte / byteMax;
        var v = max;
        hue = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(hue, one), hue - one, hue) + one;
        hue = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(hue, one), hue - one, hue) * Vector512.Create(6.0);
        var sector = Vector512.Floor(hue);
        var f = hue - sector;
        var p = v * (one - s);
        var q = v * (one - s * f);
        var t = v * (one - s * (one - f));
        var k0 = Vector512.Equals(sector, zero);
        var k1 = Vector512.Equals(sector, one);
        var k2 = Vector512.Equals(sector, Vector512.Create(2.0));
        var k3 = Vector512.Equals(sector, Vector512.Create(3.0));
        var k4 = Vector512.Equals(sector, Vector512.Create(4.0));
        // 0 (v, t, p) 1 (q, v, p) 2 (p, v, t) 3 (p, q, v) 4 (t, p, v) 5 (v, p, q)
        var rr = Vector512.ConditionalSelect(k0, v, Vector512.ConditionalSelect(k1, q, Vector512.ConditionalSelect(k2 | k3, p, Vector512.ConditionalSelect(k4, t, v))));
        var gg = Vector512.ConditionalSelect(k0, t, Vector512.ConditionalSelect(k1 | k2, v, Vector512.ConditionalSelect(k3, q, p)));
        var bb = Vector512.ConditionalSelect(k0 | k1, p, Vector512.ConditionalSelect(k2, t, Vector512.ConditionalSelect(k3 | k4, v, q)));
        var plain = Vector512.Equals(satByte, zero);
        rr = Vector512.ConditionalSelect(plain, v, Vector512.Round(rr));
        gg = Vector512.ConditionalSelect(plain, v, Vector512.Round(gg));
        bb = Vector512.ConditionalSelect(plain, v, Vector512.Round(bb));
        Store8(rr, red, i);
        Store8(gg, green, i);
        Store8(bb, blue, i);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void Step4(Span<byte> red, Span<byte> green, Span<byte> blue, int i, int delta)
    {
        var r = Vector256.Create((double)red[i], red[i + 1], red[i + 2], red[i + 3]);
        var g = Vector256.Create((double)green[i], green[i + 1], green[i + 2], green[i + 3]);
        var b = Vector256.Create((double)blue[i], blue[i + 1], blue[i + 2], blue[i + 3]);
        var zero = Vector256<double>.Zero;
        var one = Vector256.Create(1.0);
        var byteMax = Vector256.Create(255.0);
        // ToHsv
        var max = Vector256.Max(r, Vector256.Max(g, b));
        var min = Vector256.Min(r, Vector256.Min(g, b));
        var grey = Vector256.Equals(max, min);
        var cr = max - min;
        var sat = cr / max;
        var rc = (max - r) / cr;
        var gc = (max - g) / cr;
        var bc = (max - b) / cr;
        var h = Vector256.ConditionalSelect(Vector256.Equals(r, max), bc - gc,
            Vector256.ConditionalSelect(Vector256.Equals(g, max), Vector256.Create(2.0) + rc - bc, Vector256.Create(4.0) + gc - rc));
        h = h / Vector256.Create(6.0) + one;
        h = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(h, one), h - one, h);
        var hueByte = Vector256.ConditionalSelect(grey, zero, Vector256.Min(Vector256.Max(Vector256.Floor(h * byteMax), zero), byteMax));
        var satByte = Vector256.ConditionalSelect(grey, zero, Vector256.Min(Vector256.Max(Vector256.Floor(sat * byteMax), zero), byteMax));
        // (byte)(h + delta): modulo 256 on integers, exact in doubles
        var shifted = hueByte + Vector256.Create((double)delta);
        var wrap = Vector256.Create(256.0);
        shifted -= wrap * Vector256.Floor(shifted / wrap);
        // FromHsv → HsvToRgb(hue / 255, sat / 255, value)
        var hue = shifted / byteMax;
        var s = satByte / byteMax;
        var v = max;
        hue = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(hue, one), hue - one, hue) + one;
        hue = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(hue, one), hue - one, hue) * Vector256.Create(6.0);
        var sector = Vector256.Floor(hue);
        var f = hue - sector;
        var p = v * (one - s);
        var q = v * (one - s * f);
        var t = v * (one - s * (one - f));
        var k0 = Vector256.Equals(sector, zero);
        var k1 = Vector256.Equals(sector, one);
        var k2 = Vector256.Equals(sector, Vector256.Create(2.0));
        var k3 = Vector256.Equals(sector, Vector256.Create(3.0));
        var k4 = Vector256.Equals(sector, Vector256.Create(4.0));
        // 0 (v, t, p) 1 (q, v, p) 2 (p, v, t) 3 (p, q, v) 4 (t, p, v) 5 (v, p, q)
        var rr = Vector256.ConditionalSelect(k0, v, Vector256.ConditionalSelect(k1, q, Vector256.ConditionalSelect(k2 | k3, p, Vector256.ConditionalSelect(k4, t, v))));
        var gg = Vector256.ConditionalSelect(k0, t, Vector256.ConditionalSelect(k1 | k2, v, Vector256.ConditionalSelect(k3, q, p)));
        var bb = Vector256.ConditionalSelect(k0 | k1, p, Vector256.ConditionalSelect(k2, t, Vector256.ConditionalSelect(k3 | k4, v, q)));
        var plain = Vector256.Equals(satByte, zero);
        rr = Vector256.ConditionalSelect(plain, v, Vector256.Round(rr));
        gg = Vector256.ConditionalSelect(plain, v, Vector256.Round(gg));
        bb = Vector256.ConditionalSelect(plain, v, Vector256.Round(bb));
        for (int k = 0; k < 4; k++)
        {
            red[i + k] = (byte)Math.Clamp((int)rr.GetElement(k), 0, 255);
            green[i + k] = (byte)Math.Clamp((int)gg.GetElement(k), 0, 255);
            blue[i + k] = (byte)Math.Clamp((int)bb.GetElement(k), 0, 255);
        }
    }
}

/// <summary>RandomGrayscale: L replicated into the three channels.</summary>
public sealed record Grayscale : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        for (int i = 0; i < pixels.Length; i += 3)
        {
            byte grey = (byte)Luma(pixels[i], pixels[i + 1], pixels[i + 2]);
            pixels[i] = pixels[i + 1] = pixels[i + 2] = grey;
        }
    }

    /// <summary>Saturation 0 is exactly the luma in every channel.</summary>
    public override void Apply(PlanarImage image) => PlanarKernels.Saturate(image.Plane(0), image.Plane(1), image.Plane(2), 0);
}

/// <summary>Gaussian blur with standard deviation <see cref="Radius"/> (PIL's GaussianBlur radius), edges extended.</summary>
public sealed record GaussianBlur(double Radius) : PixelOp
{
    /// <summary>The same kernel, passes and float arithmetic per plane (each output's sum in the same order), 8 outputs at a time.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public override void Apply(PlanarImage image)
    {
        int reach = Math.Max(1, (int)Math.Ceiling(3 * Radius));
        float[] kernel = new float[2 * reach + 1];
        double total = 0;
        for (int k = -reach; k <= reach; k++) total += kernel[k + reach] = (float)Math.Exp(-k * k / (2 * Radius * Radius));
        for (int k = 0; k < kernel.Length; k++) kernel[k] /= (float)total;
        int w = image.Width, h = image.Height, n = w * h;
        float[] rows = System.Buffers.ArrayPool<float>.Shared.Rent(n);
        float[] padded = System.Buffers.ArrayPool<float>.Shared.Rent(w + 2 * reach + 8);
        float[] column = System.Buffers.ArrayPool<float>.Shared.Rent(w + 8);
        try
        {
            for (int c = 0; c < 3; c++)
            {
                var plane = image.Plane(c);
                for (int y = 0; y < h; y++)
                {
                    var row = plane.Slice(y * w, w);
                    for (int x = -reach; x < w + reach; x++) padded[x + reach] = row[Math.Clamp(x, 0, w - 1)];
                    var output = rows.AsSpan(y * w, w);
                    int i = 0;
                    if (Vector512.IsHardwareAccelerated)
                    {
                        ref float source = ref padded[0];
                        ref float destination = ref MemoryMarshal.GetReference(output);
                        for (; i + 16 <= w; i += 16)
                        {
                            var sum = Vector512<float>.Zero;
                            for (int k = 0; k < kernel.Length; k++) sum += Vector512.Create(kernel[k]) * Vector512.LoadUnsafe(ref source, (nuint)(i + k));
                            sum.StoreUnsafe(ref destination, (nuint)i);
                        }
                    }
                    for (; i + 8 <= w; i += 8)
                    {
                        var sum = Vector256<float>.Zero;
                        for (int k = 0; k < kernel.Length; k++) sum += Vector256.Create(kernel[k]) * Vector256.Create<float>(padded.AsSpan(i + k, 8));
                        sum.CopyTo(output.Slice(i, 8));
                    }
                    for (; i < w; i++)
                    {
                        float sum = 0;
                        for (int k = 0; k < kernel.Length; k++) sum += kernel[k] * padded[i + k];
                        output[i] = sum;
                    }
                }
                for (int y = 0; y < h; y++)
                {
                    var sums = column.AsSpan(0, w);
                    sums.Clear();
                    for (int k = -reach; k <= reach; k++)
                    {
                        float weight = kernel[k + reach];
                        var source = rows.AsSpan(Math.Clamp(y + k, 0, h - 1) * w, w);
                        int i = 0;
                        if (Vector512.IsHardwareAccelerated)
                        {
                            ref float into = ref MemoryMarshal.GetReference(sums);
                            ref float from = ref MemoryMarshal.GetReference(source);
                            var scaled = Vector512.Create(weight);
                            for (; i + 16 <= w; i += 16)
                                (Vector512.LoadUnsafe(ref into, (nuint)i) + scaled * Vector512.LoadUnsafe(ref from, (nuint)i)).StoreUnsafe(ref into, (nuint)i);
                        }
                        for (; i + 8 <= w; i += 8)
                            (Vector256.Create<float>(sums.Slice(i, 8)) + Vector256.Create(weight) * Vector256.Create<float>(source.Slice(i, 8))).CopyTo(sums.Slice(i, 8));
                        for (; i < w; i++) sums[i] += weight * source[i];
                    }
                    var target = plane.Slice(y * w, w);
                    int x = 0;
                    if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
                        for (; x + 16 <= w; x += 16)
                        {
                            // (int) truncates towards zero as the scalar cast does; the sums are far inside the int range.
                            var rounded = Avx512F.ConvertToVector512Int32WithTruncation(Vector512.Create<float>(sums.Slice(x, 16)) + Vector512.Create(0.5f));
                            var clamped = Vector512.Min(Vector512.Max(rounded, Vector512<int>.Zero), Vector512.Create(255));
                            Avx512F.ConvertToVector128Byte(clamped).CopyTo(target.Slice(x, 16));
                        }
                    for (; x < w; x++) target[x] = (byte)Math.Clamp((int)(sums[x] + 0.5f), 0, 255);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rows);
            System.Buffers.ArrayPool<float>.Shared.Return(padded);
            System.Buffers.ArrayPool<float>.Shared.Return(column);
        }
    }

    public override void Apply(RgbImage image)
    {
        int reach = Math.Max(1, (int)Math.Ceiling(3 * Radius));
        float[] kernel = new float[2 * reach + 1];
        double total = 0;
        for (int k = -reach; k <= reach; k++) total += kernel[k + reach] = (float)Math.Exp(-k * k / (2 * Radius * Radius));
        for (int k = 0; k < kernel.Length; k++) kernel[k] /= (float)total;

        int w = image.Width, h = image.Height;
        var pixels = image.Pixels;
        float[] rows = new float[image.Length];
        // Horizontal pass per row on an edge-extended copy (no clamping in the inner loop), then vertical.
        float[] padded = new float[3 * (w + 2 * reach)];
        for (int y = 0; y < h; y++)
        {
            var row = pixels.Slice(3 * y * w, 3 * w);
            for (int x = -reach; x < w + reach; x++)
                for (int c = 0; c < 3; c++) padded[3 * (x + reach) + c] = row[3 * Math.Clamp(x, 0, w - 1) + c];
            for (int i = 0; i < 3 * w; i++)
            {
                float sum = 0;
                for (int k = 0; k < kernel.Length; k++) sum += kernel[k] * padded[i + 3 * k];
                rows[3 * y * w + i] = sum;
            }
        }
        float[] column = new float[3 * w];
        for (int y = 0; y < h; y++)
        {
            Array.Clear(column);
            for (int k = -reach; k <= reach; k++)
            {
                float weight = kernel[k + reach];
                int sourceRow = 3 * Math.Clamp(y + k, 0, h - 1) * w;
                for (int i = 0; i < column.Length; i++) column[i] += weight * rows[sourceRow + i];
            }
            for (int i = 0; i < column.Length; i++) pixels[3 * y * w + i] = (byte)Math.Clamp((int)(column[i] + 0.5f), 0, 255);
        }
    }
}

/// <summary>PIL ImageOps.solarize: values at or above the threshold are inverted.</summary>
public sealed record Solarize(int Threshold = 128) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(v < Threshold ? v : 255 - v);
        Lookup(image.Pixels, table);
    }

    public override void Apply(PlanarImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(v < Threshold ? v : 255 - v);
        Lookup(image.Pixels, table);
    }
}

/// <summary>timm's solarize_add: values below the threshold get <see cref="Addition"/> added (clipped).</summary>
public sealed record SolarizeAdd(int Addition, int Threshold = 128) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(v < Threshold ? Math.Min(255, v + Addition) : v);
        Lookup(image.Pixels, table);
    }

    public override void Apply(PlanarImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(v < Threshold ? Math.Min(255, v + Addition) : v);
        Lookup(image.Pixels, table);
    }
}

/// <summary>PIL ImageOps.posterize: keep the top <see cref="Bits"/> bits.</summary>
public sealed record Posterize(int Bits) : PixelOp
{
    public override void Apply(RgbImage image) => Apply(image.Pixels);

    public override void Apply(PlanarImage image) => Apply(image.Pixels);

    private void Apply(Span<byte> pixels)
    {
        if (Bits >= 8) return;
        byte mask = (byte)~((1 << (8 - Math.Max(Bits, 0))) - 1);
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(v & mask);
        Lookup(pixels, table);
    }
}

public sealed record Invert : PixelOp
{
    public override void Apply(RgbImage image) => Apply(image.Pixels);

    public override void Apply(PlanarImage image) => Apply(image.Pixels);

    private static void Apply(Span<byte> pixels)
    {
        Span<byte> table = stackalloc byte[256];
        for (int v = 0; v < 256; v++) table[v] = (byte)(255 - v);
        Lookup(pixels, table);
    }
}

/// <summary>PIL ImageOps.autocontrast (cutoff 0): stretch each channel's range to 0..255.</summary>
public sealed record AutoContrast : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        Span<byte> table = stackalloc byte[256];
        for (int c = 0; c < 3; c++)
        {
            int lo = 255, hi = 0;
            for (int i = c; i < pixels.Length; i += 3)
            {
                lo = Math.Min(lo, pixels[i]);
                hi = Math.Max(hi, pixels[i]);
            }
            if (!Stretch(lo, hi, table)) continue;
            for (int i = c; i < pixels.Length; i += 3) pixels[i] = table[pixels[i]];
        }
    }

    public override void Apply(PlanarImage image)
    {
        Span<byte> table = stackalloc byte[256];
        for (int c = 0; c < 3; c++)
        {
            var plane = image.Plane(c);
            var (lo, hi) = Range(plane);
            if (Stretch(lo, hi, table)) Lookup(plane, table);
        }
    }

    /// <summary>The table mapping lo..hi onto 0..255; false when the channel is flat (left as it is).</summary>
    private static bool Stretch(int lo, int hi, Span<byte> table)
    {
        if (hi <= lo) return false;
        double scale = 255.0 / (hi - lo), offset = -lo * scale;
        for (int v = 0; v < 256; v++) table[v] = (byte)Math.Clamp((int)(v * scale + offset), 0, 255);
        return true;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static (int Lo, int Hi) Range(ReadOnlySpan<byte> plane)
    {
        int i = 0;
        var lo = System.Numerics.Vector<byte>.AllBitsSet;
        var hi = System.Numerics.Vector<byte>.Zero;
        for (; i + System.Numerics.Vector<byte>.Count <= plane.Length; i += System.Numerics.Vector<byte>.Count)
        {
            var v = new System.Numerics.Vector<byte>(plane.Slice(i));
            lo = System.Numerics.Vector.Min(lo, v);
            hi = System.Numerics.Vector.Max(hi, v);
        }
        int min = 255, max = 0;
        for (int k = 0; k < System.Numerics.Vector<byte>.Count && i > 0; k++)
        {
            min = Math.Min(min, lo[k]);
            max = Math.Max(max, hi[k]);
        }
        for (; i < plane.Length; i++)
        {
            min = Math.Min(min, plane[i]);
            max = Math.Max(max, plane[i]);
        }
        return (min, max);
    }
}

/// <summary>PIL ImageOps.equalize, per channel.</summary>
public sealed record Equalize : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        Span<int> histogram = stackalloc int[256];
        Span<byte> table = stackalloc byte[256];
        for (int c = 0; c < 3; c++)
        {
            histogram.Clear();
            for (int i = c; i < pixels.Length; i += 3) histogram[pixels[i]]++;
            if (!Equalizing(histogram, table)) continue;
            for (int i = c; i < pixels.Length; i += 3) pixels[i] = table[pixels[i]];
        }
    }

    public override void Apply(PlanarImage image)
    {
        Span<int> histogram = stackalloc int[256];
        Span<byte> table = stackalloc byte[256];
        for (int c = 0; c < 3; c++)
        {
            var plane = image.Plane(c);
            histogram.Clear();
            foreach (byte v in plane) histogram[v]++;
            if (Equalizing(histogram, table)) Lookup(plane, table);
        }
    }

    /// <summary>PIL's equalizing lookup table for one channel's histogram; false when it leaves the channel as it is.</summary>
    private static bool Equalizing(ReadOnlySpan<int> histogram, Span<byte> table)
    {
        int last = 255;
        while (last > 0 && histogram[last] == 0) last--;
        int nonZero = 0, total = 0;
        for (int v = 0; v < 256; v++)
            if (histogram[v] > 0) { nonZero++; total += histogram[v]; }
        int step = nonZero <= 1 ? 0 : (total - histogram[last]) / 255;
        if (step == 0) return false;
        int n = step / 2;
        for (int v = 0; v < 256; v++)
        {
            table[v] = (byte)Math.Min(255, n / step);
            n += histogram[v];
        }
        return true;
    }
}

/// <summary>PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (3×3, centre 5, total 13; borders kept).</summary>
public sealed record Sharpness(double Factor) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        int w = image.Width, h = image.Height;
        var pixels = image.Pixels;
        byte[] smooth = pixels.ToArray();
        for (int y = 1; y < h - 1; y++)
            for (int x = 1; x < w - 1; x++)
                for (int c = 0; c < 3; c++)
                {
                    int sum = 4 * pixels[3 * (y * w + x) + c];
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) sum += pixels[3 * ((y + dy) * w + x + dx) + c];
                    smooth[3 * (y * w + x) + c] = (byte)((sum + 6) / 13);
                }
        for (int i = 0; i < pixels.Length; i++) pixels[i] = Clip(smooth[i] + Factor * (pixels[i] - smooth[i]));
    }

    /// <summary>
    /// The same bytes plane by plane: border pixels blend with themselves and stay; inner rows are smoothed sixteen
    /// pixels at a time ((sum + 6) / 13 as a multiply-high by 5042 / 2¹⁶, exact for sums below 6,553) and blended eight
    /// at a time in doubles with the scalar code's operations.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public override void Apply(PlanarImage image)
    {
        int w = image.Width, h = image.Height;
        if (w < 3 || h < 3) return;
        byte[] rented = System.Buffers.ArrayPool<byte>.Shared.Rent(w * h + w);
        try
        {
            var source = rented.AsSpan(0, w * h);
            var smooth = rented.AsSpan(w * h, w);
            for (int c = 0; c < 3; c++)
            {
                var plane = image.Plane(c);
                plane.CopyTo(source);
                for (int y = 1; y < h - 1; y++)
                {
                    var above = source.Slice((y - 1) * w, w);
                    var row = source.Slice(y * w, w);
                    var below = source.Slice((y + 1) * w, w);
                    SmoothRow(above, row, below, smooth);
                    BlendRow(row, smooth, plane.Slice(y * w, w), Factor);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>SMOOTH of the inner pixels of <paramref name="row"/> into <paramref name="smooth"/>; its two ends copy the row's.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void SmoothRow(ReadOnlySpan<byte> above, ReadOnlySpan<byte> row, ReadOnlySpan<byte> below, Span<byte> smooth)
    {
        int w = row.Length, x = 1;
        smooth[0] = row[0];
        smooth[w - 1] = row[w - 1];
        if (Avx2.IsSupported)
        {
            var six = Vector256.Create((ushort)6);
            var reciprocal = Vector256.Create((ushort)5042);
            for (; x + 17 <= w; x += 16)
            {
                var sum = Widen(above, x - 1) + Widen(above, x) + Widen(above, x + 1)
                        + Widen(row, x - 1) + Widen(row, x + 1)
                        + Widen(below, x - 1) + Widen(below, x) + Widen(below, x + 1)
                        + Vector256.ShiftLeft(Widen(row, x), 2) + Widen(row, x);
                var divided = Avx2.MultiplyHigh(sum + six, reciprocal);
                Vector128.Narrow(divided.GetLower(), divided.GetUpper()).StoreUnsafe(ref MemoryMarshal.GetReference(smooth), (nuint)x);
            }
        }
        for (; x < w - 1; x++)
        {
            int sum = 4 * row[x];
            for (int dx = -1; dx <= 1; dx++) sum += above[x + dx] + row[x + dx] + below[x + dx];
            smooth[x] = (byte)((sum + 6) / 13);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector256<ushort> Widen(ReadOnlySpan<byte> values, int at) =>
        Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(values), (nuint)at)).AsUInt16();

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void BlendRow(ReadOnlySpan<byte> row, ReadOnlySpan<byte> smooth, Span<byte> output, double factor)
    {
        int x = 0;
        if (Avx512F.IsSupported)
        {
            var f = Vector512.Create(factor);
            for (; x + 8 <= row.Length; x += 8)
            {
                var s = Load8(smooth, x);
                StoreRounded8(s + f * (Load8(row, x) - s), output, x);
            }
        }
        for (; x < row.Length; x++) output[x] = Clip(smooth[x] + factor * (row[x] - smooth[x]));
    }
}

/// <summary>
/// PIL's affine transform (rotate, shear, translate): output pixel centre (x, y) samples the input at
/// (A·x + B·y + C, D·x + E·y + F); outside the image takes <see cref="Fill"/>.
/// </summary>
public sealed record Affine(double A, double B, double C, double D, double E, double F, ResampleKernel Kernel, byte FillR, byte FillG, byte FillB) : PixelOp
{
    public static Affine Rotate(double degrees, int width, int height, ResampleKernel kernel, byte r, byte g, byte b)
    {
        double angle = -degrees * Math.PI / 180;
        double cos = Math.Round(Math.Cos(angle), 15), sin = Math.Round(Math.Sin(angle), 15);
        double cx = width / 2.0, cy = height / 2.0;
        return new Affine(cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy, kernel, r, g, b);
    }

    /// <summary>
    /// The same transform on planes, the same arithmetic in the same order (so the same bytes): weights are computed
    /// once per distinct fractional offset (shears and translations repeat them along a row or column), and where one
    /// axis falls exactly on a pixel (its weights 0, 1, 0, 0) only the other axis' four taps are summed: the skipped
    /// terms are exact zeros.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public override unsafe void Apply(PlanarImage image)
    {
        if (Kernel == ResampleKernel.Nearest) { base.Apply(image); return; }
        int w = image.Width, h = image.Height, n = w * h;
        byte[] copy = System.Buffers.ArrayPool<byte>.Shared.Rent(3 * n);
        try
        {
            image.Pixels.CopyTo(copy);
            var red = image.Plane(0);
            var green = image.Plane(1);
            var blue = image.Plane(2);
            fixed (byte* source = copy, redAt = red, greenAt = green, blueAt = blue)
            {
            var kernel = Kernel == ResampleKernel.Bilinear ? ResampleKernel.Bilinear : ResampleKernel.Bicubic;
            int reach = kernel == ResampleKernel.Bilinear ? 1 : 2, taps = 2 * reach;
            Span<double> wx = stackalloc double[4], wy = stackalloc double[4];
            Span<int> cols = stackalloc int[4], rows = stackalloc int[4];
            double lastFx = double.NaN, lastFy = double.NaN;
            bool xDelta = false, yDelta = false;
            // With AVX-512 every bicubic transform takes the eight-pixel path (taps gathered four bytes at a time);
            // with AVX2 alone rotations and vertical shears (D non-zero: fy varies along a row) take the four-pixel one,
            // and horizontal shears and translations, one row of taps, stay scalar (no faster in those vectors).
            bool wide = kernel == ResampleKernel.Bicubic && Avx512F.IsSupported;
            bool vector = kernel == ResampleKernel.Bicubic && D != 0 && Avx2.IsSupported;
            for (int y = 0; y < h; y++)
            {
                int scalarUntil = 0;
                for (int x = 0; x < w; x++)
                {
                    if (wide && x >= scalarUntil && x + 8 <= w)
                    {
                        if (BicubicBlock8(x, y, w, h, n, source, redAt, greenAt, blueAt)) { x += 7; continue; }
                        scalarUntil = x + 8;
                    }
                    else if (!wide && vector && x >= scalarUntil && x + 4 <= w)
                    {
                        if (BicubicBlock(x, y, w, h, n, source, redAt, greenAt, blueAt)) { x += 3; continue; }
                        scalarUntil = x + 4;
                    }
                    double sx = A * (x + 0.5) + B * (y + 0.5) + C - 0.5;
                    double sy = D * (x + 0.5) + E * (y + 0.5) + F - 0.5;
                    int o = y * w + x;
                    if (sx < -0.5 || sy < -0.5 || sx > w - 0.5 || sy > h - 0.5)
                    {
                        red[o] = FillR;
                        green[o] = FillG;
                        blue[o] = FillB;
                        continue;
                    }
                    int x0 = (int)Math.Floor(sx), y0 = (int)Math.Floor(sy);
                    double fx = sx - x0, fy = sy - y0;
                    if (!fx.Equals(lastFx))
                    {
                        for (int k = 0; k < taps; k++) wx[k] = kernel == ResampleKernel.Bicubic ? Cubic(k + 1 - reach - fx) : Resampler.Weight(kernel, k + 1 - reach - fx);
                        lastFx = fx;
                        xDelta = IsDelta(wx, taps, reach);
                    }
                    if (!fy.Equals(lastFy))
                    {
                        for (int k = 0; k < taps; k++) wy[k] = kernel == ResampleKernel.Bicubic ? Cubic(k + 1 - reach - fy) : Resampler.Weight(kernel, k + 1 - reach - fy);
                        lastFy = fy;
                        yDelta = IsDelta(wy, taps, reach);
                    }
                    if (x0 + 1 - reach >= 0 && x0 + reach < w && y0 + 1 - reach >= 0 && y0 + reach < h)
                    {
                        // Every tap inside: no clamping, no bounds checks; the same terms in the same order.
                        byte* at = source + (y0 + 1 - reach) * w + (x0 + 1 - reach);
                        double fr = 0, fg = 0, fb = 0, ftotal = 0;
                        if (yDelta)
                        {
                            byte* row = at + (reach - 1) * w;
                            double wyc = wy[reach - 1];
                            for (int i = 0; i < taps; i++)
                            {
                                double weight = wx[i] * wyc;
                                fr += weight * row[i];
                                fg += weight * row[n + i];
                                fb += weight * row[2 * n + i];
                                ftotal += weight;
                            }
                        }
                        else if (xDelta)
                        {
                            byte* column = at + (reach - 1);
                            double wxc = wx[reach - 1];
                            for (int j = 0; j < taps; j++)
                            {
                                double weight = wxc * wy[j];
                                byte* tap = column + j * w;
                                fr += weight * tap[0];
                                fg += weight * tap[n];
                                fb += weight * tap[2 * n];
                                ftotal += weight;
                            }
                        }
                        else if (taps == 4)
                        {
                            double wx0 = wx[0], wx1 = wx[1], wx2 = wx[2], wx3 = wx[3];
                            for (int j = 0; j < 4; j++)
                            {
                                byte* row = at + j * w;
                                double wyj = wy[j];
                                double w0 = wx0 * wyj, w1 = wx1 * wyj, w2 = wx2 * wyj, w3 = wx3 * wyj;
                                fr += w0 * row[0]; fg += w0 * row[n]; fb += w0 * row[2 * n]; ftotal += w0;
                                fr += w1 * row[1]; fg += w1 * row[n + 1]; fb += w1 * row[2 * n + 1]; ftotal += w1;
                                fr += w2 * row[2]; fg += w2 * row[n + 2]; fb += w2 * row[2 * n + 2]; ftotal += w2;
                                fr += w3 * row[3]; fg += w3 * row[n + 3]; fb += w3 * row[2 * n + 3]; ftotal += w3;
                            }
                        }
                        else
                        {
                            for (int j = 0; j < taps; j++)
                            {
                                byte* row = at + j * w;
                                for (int i = 0; i < taps; i++)
                                {
                                    double weight = wx[i] * wy[j];
                                    fr += weight * row[i];
                                    fg += weight * row[n + i];
                                    fb += weight * row[2 * n + i];
                                    ftotal += weight;
                                }
                            }
                        }
                        red[o] = Clip(fr / ftotal);
                        green[o] = Clip(fg / ftotal);
                        blue[o] = Clip(fb / ftotal);
                        continue;
                    }
                    for (int k = 0; k < taps; k++)
                    {
                        cols[k] = Math.Clamp(x0 + k + 1 - reach, 0, w - 1);
                        rows[k] = Math.Clamp(y0 + k + 1 - reach, 0, h - 1) * w;
                    }
                    double r = 0, g = 0, b = 0, total = 0;
                    if (yDelta)
                    {
                        int row = rows[reach - 1];
                        for (int i = 0; i < taps; i++)
                        {
                            double weight = wx[i] * wy[reach - 1];
                            int at = row + cols[i];
                            r += weight * copy[at];
                            g += weight * copy[n + at];
                            b += weight * copy[2 * n + at];
                            total += weight;
                        }
                    }
                    else if (xDelta)
                    {
                        int column = cols[reach - 1];
                        for (int j = 0; j < taps; j++)
                        {
                            double weight = wx[reach - 1] * wy[j];
                            int at = rows[j] + column;
                            r += weight * copy[at];
                            g += weight * copy[n + at];
                            b += weight * copy[2 * n + at];
                            total += weight;
                        }
                    }
                    else
                    {
                        for (int j = 0; j < taps; j++)
                            for (int i = 0; i < taps; i++)
                            {
                                double weight = wx[i] * wy[j];
                                int at = rows[j] + cols[i];
                                r += weight * copy[at];
                                g += weight * copy[n + at];
                                b += weight * copy[2 * n + at];
                                total += weight;
                            }
                    }
                    red[o] = Clip(r / total);
                    green[o] = Clip(g / total);
                    blue[o] = Clip(b / total);
                }
            }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(copy);
        }
    }

    /// <summary>
    /// Output pixels x..x+3 of row y when all four sample inside the image with every bicubic tap in range: the scalar
    /// code's arithmetic lane by lane (the same source coordinates, weights, and the sixteen terms summed in the same
    /// order; where the scalar code skips a row or column of exact-zero weights, adding them changes nothing). False
    /// (nothing written) when any of the four needs filling or clamping.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private unsafe bool BicubicBlock(int x, int y, int w, int h, int n, byte* source, byte* red, byte* green, byte* blue)
    {
        var xs = Vector256.Create((double)x) + Vector256.Create(0.5, 1.5, 2.5, 3.5);
        double yh = y + 0.5;
        var sx = Vector256.Create(A) * xs + Vector256.Create(B * yh) + Vector256.Create(C) - Vector256.Create(0.5);
        var sy = Vector256.Create(D) * xs + Vector256.Create(E * yh) + Vector256.Create(F) - Vector256.Create(0.5);
        var x0 = Vector256.Floor(sx);
        var y0 = Vector256.Floor(sy);
        // Inside (no fill) and x0 − 1 ≥ 0, x0 + 2 ≤ w − 1 (likewise y): implies the fill test passes.
        var outside = Vector256.LessThan(x0, Vector256.Create(1.0)) | Vector256.GreaterThan(x0, Vector256.Create(w - 3.0))
            | Vector256.LessThan(y0, Vector256.Create(1.0)) | Vector256.GreaterThan(y0, Vector256.Create(h - 3.0))
            | Vector256.LessThan(sx, Vector256.Create(-0.5)) | Vector256.GreaterThan(sx, Vector256.Create(w - 0.5))
            | Vector256.LessThan(sy, Vector256.Create(-0.5)) | Vector256.GreaterThan(sy, Vector256.Create(h - 0.5));
        if (outside != Vector256<double>.Zero) return false;
        var fx = sx - x0;
        var fy = sy - y0;
        var wx0 = CubicV(Vector256.Create(-1.0) - fx);
        var wx1 = CubicV(Vector256<double>.Zero - fx);
        var wx2 = CubicV(Vector256.Create(1.0) - fx);
        var wx3 = CubicV(Vector256.Create(2.0) - fx);
        var first = Avx.ConvertToVector128Int32WithTruncation((y0 - Vector256.Create(1.0)) * Vector256.Create((double)w) + (x0 - Vector256.Create(1.0)));
        byte* p0 = source + first.GetElement(0), p1 = source + first.GetElement(1), p2 = source + first.GetElement(2), p3 = source + first.GetElement(3);
        Vector256<double> r = Vector256<double>.Zero, g = r, b = r, total = r;
        var mask = Vector128.Create(0xFF);
        for (int j = 0; j < 4; j++)
        {
            var wyj = CubicV(Vector256.Create((double)(j - 1)) - fy);
            var w0 = wx0 * wyj;
            var w1 = wx1 * wyj;
            var w2 = wx2 * wyj;
            var w3 = wx3 * wyj;
            int row = j * w;
            var ur = Vector128.Create(ReadTaps(p0 + row), ReadTaps(p1 + row), ReadTaps(p2 + row), ReadTaps(p3 + row));
            row += n;
            var ug = Vector128.Create(ReadTaps(p0 + row), ReadTaps(p1 + row), ReadTaps(p2 + row), ReadTaps(p3 + row));
            row += n;
            var ub = Vector128.Create(ReadTaps(p0 + row), ReadTaps(p1 + row), ReadTaps(p2 + row), ReadTaps(p3 + row));
            r += w0 * Avx.ConvertToVector256Double(ur & mask);
            g += w0 * Avx.ConvertToVector256Double(ug & mask);
            b += w0 * Avx.ConvertToVector256Double(ub & mask);
            total += w0;
            r += w1 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ur, 8) & mask);
            g += w1 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ug, 8) & mask);
            b += w1 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ub, 8) & mask);
            total += w1;
            r += w2 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ur, 16) & mask);
            g += w2 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ug, 16) & mask);
            b += w2 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ub, 16) & mask);
            total += w2;
            r += w3 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ur, 24));
            g += w3 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ug, 24));
            b += w3 * Avx.ConvertToVector256Double(Vector128.ShiftRightLogical(ub, 24));
            total += w3;
        }
        r /= total;
        g /= total;
        b /= total;
        int o = y * w + x;
        for (int k = 0; k < 4; k++)
        {
            red[o + k] = Clip(r.GetElement(k));
            green[o + k] = Clip(g.GetElement(k));
            blue[o + k] = Clip(b.GetElement(k));
        }
        return true;
    }

    /// <summary>
    /// <see cref="BicubicBlock"/> for output pixels x..x+7 in 512-bit vectors: the same arithmetic lane by lane, each
    /// lane's row of four taps gathered as one 32-bit word per channel, and <see cref="PixelOp.Clip"/> in vectors.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private unsafe bool BicubicBlock8(int x, int y, int w, int h, int n, byte* source, byte* red, byte* green, byte* blue)
    {
        var xs = Vector512.Create((double)x) + Vector512.Create(0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5);
        double yh = y + 0.5;
        var sx = Vector512.Create(A) * xs + Vector512.Create(B * yh) + Vector512.Create(C) - Vector512.Create(0.5);
        var sy = Vector512.Create(D) * xs + Vector512.Create(E * yh) + Vector512.Create(F) - Vector512.Create(0.5);
        var x0 = Vector512.Floor(sx);
        var y0 = Vector512.Floor(sy);
        var outside = Vector512.LessThan(x0, Vector512.Create(1.0)) | Vector512.GreaterThan(x0, Vector512.Create(w - 3.0))
            | Vector512.LessThan(y0, Vector512.Create(1.0)) | Vector512.GreaterThan(y0, Vector512.Create(h - 3.0))
            | Vector512.LessThan(sx, Vector512.Create(-0.5)) | Vector512.GreaterThan(sx, Vector512.Create(w - 0.5))
            | Vector512.LessThan(sy, Vector512.Create(-0.5)) | Vector512.GreaterThan(sy, Vector512.Create(h - 0.5));
        if (outside != Vector512<double>.Zero) return false;
        var fx = sx - x0;
        var fy = sy - y0;
        var wx0 = CubicV(Vector512.Create(-1.0) - fx);
        var wx1 = CubicV(Vector512<double>.Zero - fx);
        var wx2 = CubicV(Vector512.Create(1.0) - fx);
        var wx3 = CubicV(Vector512.Create(2.0) - fx);
        var first = Avx512F.ConvertToVector256Int32WithTruncation((y0 - Vector512.Create(1.0)) * Vector512.Create((double)w) + (x0 - Vector512.Create(1.0)));
        Vector512<double> r = Vector512<double>.Zero, g = r, b = r, total = r;
        var mask = Vector256.Create(0xFF);
        // A zero offset on an axis makes its weights (−0, 1, −0, 0): every term off the middle row (or column) is a
        // signed zero and adding it changes nothing, so translations and shears sum the middle one alone, as the scalar
        // code does.
        bool middleRow = Vector512.EqualsAll(fy, Vector512<double>.Zero), middleColumn = Vector512.EqualsAll(fx, Vector512<double>.Zero);
        for (int j = middleRow ? 1 : 0; j < (middleRow ? 2 : 4); j++)
        {
            var wyj = CubicV(Vector512.Create((double)(j - 1)) - fy);
            var w0 = wx0 * wyj;
            var w1 = wx1 * wyj;
            var w2 = wx2 * wyj;
            var w3 = wx3 * wyj;
            var at = first + Vector256.Create(j * w);
            var ur = Avx2.GatherVector256((int*)source, at, 1);
            var ug = Avx2.GatherVector256((int*)(source + n), at, 1);
            var ub = Avx2.GatherVector256((int*)(source + 2 * n), at, 1);
            if (!middleColumn)
            {
                r += w0 * Avx512F.ConvertToVector512Double(ur & mask);
                g += w0 * Avx512F.ConvertToVector512Double(ug & mask);
                b += w0 * Avx512F.ConvertToVector512Double(ub & mask);
                total += w0;
            }
            r += w1 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ur, 8) & mask);
            g += w1 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ug, 8) & mask);
            b += w1 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ub, 8) & mask);
            total += w1;
            if (middleColumn) continue;
            r += w2 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ur, 16) & mask);
            g += w2 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ug, 16) & mask);
            b += w2 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ub, 16) & mask);
            total += w2;
            r += w3 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ur, 24));
            g += w3 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ug, 24));
            b += w3 * Avx512F.ConvertToVector512Double(Vector256.ShiftRightLogical(ub, 24));
            total += w3;
        }
        int o = y * w + x;
        StoreRounded8(r / total, new Span<byte>(red + o, 8), 0);
        StoreRounded8(g / total, new Span<byte>(green + o, 8), 0);
        StoreRounded8(b / total, new Span<byte>(blue + o, 8), 0);
        return true;
    }

    /// <summary>The four bytes at <paramref name="at"/> (one row of taps), as a signed int whose bytes are the taps.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static unsafe int ReadTaps(byte* at) => System.Runtime.CompilerServices.Unsafe.ReadUnaligned<int>(at);

    /// <summary><see cref="Cubic"/> lane by lane: the same expressions, the branch as a select.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> CubicV(Vector256<double> t)
    {
        var x = Vector256.Abs(t);
        const double a = -0.5;
        var near = ((Vector256.Create(a + 2) * x - Vector256.Create(a + 3)) * x * x) + Vector256.Create(1.0);
        var far = (((x - Vector256.Create(5.0)) * x + Vector256.Create(8.0)) * x - Vector256.Create(4.0)) * Vector256.Create(a);
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(1.0)), near,
            Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(2.0)), far, Vector256<double>.Zero));
    }

    /// <summary><see cref="Cubic"/> lane by lane in 512-bit vectors.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> CubicV(Vector512<double> t)
    {
        var x = Vector512.Abs(t);
        const double a = -0.5;
        var near = ((Vector512.Create(a + 2) * x - Vector512.Create(a + 3)) * x * x) + Vector512.Create(1.0);
        var far = (((x - Vector512.Create(5.0)) * x + Vector512.Create(8.0)) * x - Vector512.Create(4.0)) * Vector512.Create(a);
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(1.0)), near,
            Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(2.0)), far, Vector512<double>.Zero));
    }

    /// <summary><see cref="Resampler.Weight"/>'s bicubic (a = −0.5), the same expression, inlined.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static double Cubic(double x)
    {
        x = Math.Abs(x);
        const double a = -0.5;
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    /// <summary>Weights that pick one pixel exactly: 1 at the centre tap, exact zeros elsewhere.</summary>
    private static bool IsDelta(ReadOnlySpan<double> weights, int taps, int reach)
    {
        for (int k = 0; k < taps; k++)
            if (weights[k] != (k == reach - 1 ? 1.0 : 0.0)) return false;
        return true;
    }

    public override void Apply(RgbImage image)
    {
        int w = image.Width, h = image.Height;
        var pixels = image.Pixels;
        byte[] source = pixels.ToArray();
        var kernel = Kernel == ResampleKernel.Bilinear ? ResampleKernel.Bilinear : ResampleKernel.Bicubic;
        int reach = kernel == ResampleKernel.Bilinear ? 1 : 2;
        Span<double> wx = stackalloc double[2 * reach], wy = stackalloc double[2 * reach];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double sx = A * (x + 0.5) + B * (y + 0.5) + C - 0.5;
                double sy = D * (x + 0.5) + E * (y + 0.5) + F - 0.5;
                int o = 3 * (y * w + x);
                if (sx < -0.5 || sy < -0.5 || sx > w - 0.5 || sy > h - 0.5)
                {
                    pixels[o] = FillR;
                    pixels[o + 1] = FillG;
                    pixels[o + 2] = FillB;
                    continue;
                }
                if (Kernel == ResampleKernel.Nearest)
                {
                    int n = 3 * (Math.Clamp((int)Math.Round(sy), 0, h - 1) * w + Math.Clamp((int)Math.Round(sx), 0, w - 1));
                    pixels[o] = source[n];
                    pixels[o + 1] = source[n + 1];
                    pixels[o + 2] = source[n + 2];
                    continue;
                }
                // Weights depend on the position only: compute them once for the three channels.
                int x0 = (int)Math.Floor(sx), y0 = (int)Math.Floor(sy);
                double total = 0;
                for (int k = 0; k < 2 * reach; k++)
                {
                    wx[k] = Resampler.Weight(kernel, k + 1 - reach - (sx - x0));
                    wy[k] = Resampler.Weight(kernel, k + 1 - reach - (sy - y0));
                }
                double r = 0, g = 0, b = 0;
                for (int j = 0; j < 2 * reach; j++)
                {
                    int row = Math.Clamp(y0 + j + 1 - reach, 0, h - 1) * w;
                    for (int i = 0; i < 2 * reach; i++)
                    {
                        double weight = wx[i] * wy[j];
                        int at = 3 * (row + Math.Clamp(x0 + i + 1 - reach, 0, w - 1));
                        r += weight * source[at];
                        g += weight * source[at + 1];
                        b += weight * source[at + 2];
                        total += weight;
                    }
                }
                pixels[o] = Clip(r / total);
                pixels[o + 1] = Clip(g / total);
                pixels[o + 2] = Clip(b / total);
            }
    }
}

/// <summary>
/// mmseg's PhotoMetricDistortion as drawn for one image: brightness delta, contrast factor (before or after the
/// HSV step), saturation factor and hue shift in degrees; null skips a step. Arithmetic in float, clipped to 0..255.
/// </summary>
public sealed record PhotometricShift(double? BrightnessDelta, double? ContrastFactor, bool ContrastFirst, double? SaturationFactor, double? HueDegrees) : PixelOp
{
    public override void Apply(RgbImage image)
    {
        var pixels = image.Pixels;
        if (BrightnessDelta is double delta)
            for (int i = 0; i < pixels.Length; i++) pixels[i] = ClipTruncate(pixels[i] + delta);
        if (ContrastFirst && ContrastFactor is double first)
            for (int i = 0; i < pixels.Length; i++) pixels[i] = ClipTruncate(pixels[i] * first);
        if (SaturationFactor is not null || HueDegrees is not null)
        {
            for (int i = 0; i < pixels.Length; i += 3)
            {
                var (h, s, v) = RgbToHsvDegrees(pixels[i], pixels[i + 1], pixels[i + 2]);
                if (SaturationFactor is double factor) s = Math.Clamp(s * factor, 0, 1);
                if (HueDegrees is double shift) h = Wrap(Remainder360(h + shift) + 360, 360);
                (pixels[i], pixels[i + 1], pixels[i + 2]) = HsvDegreesToRgb(h, s, v);
            }
        }
        if (!ContrastFirst && ContrastFactor is double last)
            for (int i = 0; i < pixels.Length; i++) pixels[i] = ClipTruncate(pixels[i] * last);
    }

    private static byte ClipTruncate(double value) => (byte)Math.Clamp((int)value, 0, 255);

    /// <summary>fmod(x, 360) for x in (−360, 720): x itself below 360 (negatives keep their sign, as in C), else x − 360.</summary>
    private static double Remainder360(double x) => x >= 360 ? x - 360 : x;

    /// <summary>
    /// The same steps on planes: the per-value steps as 256-entry tables (the same bytes), the HSV step four pixels
    /// at a time in double precision with the same operations in the same order, so the same bytes too (tested
    /// against the interleaved code).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public override void Apply(PlanarImage image)
    {
        var pixels = image.Pixels;
        Span<byte> table = stackalloc byte[256];
        if (BrightnessDelta is double delta)
        {
            for (int v = 0; v < 256; v++) table[v] = ClipTruncate(v + delta);
            Lookup(pixels, table);
        }
        if (ContrastFirst && ContrastFactor is double first)
        {
            for (int v = 0; v < 256; v++) table[v] = ClipTruncate(v * first);
            Lookup(pixels, table);
        }
        if (SaturationFactor is not null || HueDegrees is not null)
        {
            var red = image.Plane(0);
            var green = image.Plane(1);
            var blue = image.Plane(2);
            int i = 0;
            if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported && Avx2.IsSupported)
                for (; i + 8 <= red.Length; i += 8) HsvStep8(red, green, blue, i);
            if (Vector256.IsHardwareAccelerated)
                for (; i + 4 <= red.Length; i += 4) HsvStep4(red, green, blue, i);
            for (; i < red.Length; i++)
            {
                var (h, s, v) = RgbToHsvDegrees(red[i], green[i], blue[i]);
                if (SaturationFactor is double factor) s = Math.Clamp(s * factor, 0, 1);
                if (HueDegrees is double shift) h = Wrap(Remainder360(h + shift) + 360, 360);
                (red[i], green[i], blue[i]) = HsvDegreesToRgb(h, s, v);
            }
        }
        if (!ContrastFirst && ContrastFactor is double last)
        {
            for (int v = 0; v < 256; v++) table[v] = ClipTruncate(v * last);
            Lookup(pixels, table);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void HsvStep4(Span<byte> red, Span<byte> green, Span<byte> blue, int i)
    {
        var r = Vector256.Create((double)red[i], red[i + 1], red[i + 2], red[i + 3]);
        var g = Vector256.Create((double)green[i], green[i + 1], green[i + 2], green[i + 3]);
        var b = Vector256.Create((double)blue[i], blue[i + 1], blue[i + 2], blue[i + 3]);
        var zero = Vector256<double>.Zero;
        var full = Vector256.Create(360.0);
        // RgbToHsvDegrees
        var max = Vector256.Max(r, Vector256.Max(g, b));
        var min = Vector256.Min(r, Vector256.Min(g, b));
        var d = max - min;
        var sixty = Vector256.Create(60.0);
        var hr = sixty * ((g - b) / d);
        var hg = sixty * ((b - r) / d) + Vector256.Create(120.0);
        var hb = sixty * ((r - g) / d) + Vector256.Create(240.0);
        var h = Vector256.ConditionalSelect(Vector256.Equals(d, zero), zero,
            Vector256.ConditionalSelect(Vector256.Equals(max, r), hr, Vector256.ConditionalSelect(Vector256.Equals(max, g), hg, hb)));
        h += full;
        h = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(h, full), h - full, h);
        var s = Vector256.ConditionalSelect(Vector256.Equals(max, zero), zero, d / max);
        var v = max;
        if (SaturationFactor is double factor) s = Vector256.Min(Vector256.Max(s * Vector256.Create(factor), zero), Vector256.Create(1.0));
        if (HueDegrees is double shift)
        {
            var x = h + Vector256.Create(shift);
            x = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, full), x - full, x);
            x += full;
            h = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, full), x - full, x);
        }
        // HsvDegreesToRgb
        var c = v * s;
        var sixth = h / sixty;
        var two = Vector256.Create(2.0);
        var four = Vector256.Create(4.0);
        var one = Vector256.Create(1.0);
        var folded = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(sixth, four), sixth - four,
            Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(sixth, two), sixth - two, sixth));
        var x2 = c * (one - Vector256.Abs(folded - one));
        var m = v - c;
        var sector = Vector256.Floor(sixth);
        var s0 = Vector256.Equals(sector, zero);
        var s1 = Vector256.Equals(sector, one);
        var s2 = Vector256.Equals(sector, two);
        var s3 = Vector256.Equals(sector, Vector256.Create(3.0));
        var s4 = Vector256.Equals(sector, four);
        // (c, x, 0) (x, c, 0) (0, c, x) (0, x, c) (x, 0, c) (c, 0, x)
        var rr = Vector256.ConditionalSelect(s0, c, Vector256.ConditionalSelect(s1, x2, Vector256.ConditionalSelect(s2 | s3, zero, Vector256.ConditionalSelect(s4, x2, c))));
        var gg = Vector256.ConditionalSelect(s0, x2, Vector256.ConditionalSelect(s1 | s2, c, Vector256.ConditionalSelect(s3, x2, zero)));
        var bb = Vector256.ConditionalSelect(s0 | s1, zero, Vector256.ConditionalSelect(s2, x2, Vector256.ConditionalSelect(s3 | s4, c, x2)));
        var half = Vector256.Create(0.5);
        Store4(rr + m + half, red, i);
        Store4(gg + m + half, green, i);
        Store4(bb + m + half, blue, i);
    }

    /// <summary>
    /// <see cref="HsvStep4"/> eight pixels at a time: bytes widened to doubles and back in registers, one division
    /// for the hue (the numerator and offset of the channel that holds the maximum are picked first, which is the
    /// division the scalar code does), otherwise the same operations in the same order.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void HsvStep8(Span<byte> red, Span<byte> green, Span<byte> blue, int i)
    {
        var r = Load8(red, i);
        var g = Load8(green, i);
        var b = Load8(blue, i);
        var zero = Vector512<double>.Zero;
        var full = Vector512.Create(360.0);
        var sixty = Vector512.Create(60.0);
        // RgbToHsvDegrees
        var max = Vector512.Max(r, Vector512.Max(g, b));
        var min = Vector512.Min(r, Vector512.Min(g, b));
        var d = max - min;
        var isRed = Vector512.Equals(max, r);
        var isGreen = Vector512.Equals(max, g);
        var numerator = Vector512.ConditionalSelect(isRed, g - b, Vector512.ConditionalSelect(isGreen, b - r, r - g));
        var angle = sixty * (numerator / d);
        var h = Vector512.ConditionalSelect(Vector512.Equals(d, zero), zero,
            Vector512.ConditionalSelect(isRed, angle, Vector512.ConditionalSelect(isGreen, angle + Vector512.Create(120.0), angle + Vector512.Create(240.0))));
        h += full;
        h = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(h, full), h - full, h);
        var s = Vector512.ConditionalSelect(Vector512.Equals(max, zero), zero, d / max);
        var v = max;
        if (SaturationFactor is double factor) s = Vector512.Min(Vector512.Max(s * Vector512.Create(factor), zero), Vector512.Create(1.0));
        if (HueDegrees is double shift)
        {
            var x = h + Vector512.Create(shift);
            x = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, full), x - full, x);
            x += full;
            h = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, full), x - full, x);
        }
        // HsvDegreesToRgb
        var c = v * s;
        var sixth = h / sixty;
        var two = Vector512.Create(2.0);
        var four = Vector512.Create(4.0);
        var one = Vector512.Create(1.0);
        var folded = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(sixth, four), sixth - four,
            Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(sixth, two), sixth - two, sixth));
        var x2 = c * (one - Vector512.Abs(folded - one));
        var m = v - c;
        var sector = Vector512.Floor(sixth);
        var s0 = Vector512.Equals(sector, zero);
        var s1 = Vector512.Equals(sector, one);
        var s2 = Vector512.Equals(sector, two);
        var s3 = Vector512.Equals(sector, Vector512.Create(3.0));
        var s4 = Vector512.Equals(sector, four);
        var rr = Vector512.ConditionalSelect(s0, c, Vector512.ConditionalSelect(s1, x2, Vector512.ConditionalSelect(s2 | s3, zero, Vector512.ConditionalSelect(s4, x2, c))));
        var gg = Vector512.ConditionalSelect(s0, x2, Vector512.ConditionalSelect(s1 | s2, c, Vector512.ConditionalSelect(s3, x2, zero)));
        var bb = Vector512.ConditionalSelect(s0 | s1, zero, Vector512.ConditionalSelect(s2, x2, Vector512.ConditionalSelect(s3 | s4, c, x2)));
        var half = Vector512.Create(0.5);
        Store8(rr + m + half, red, i);
        Store8(gg + m + half, green, i);
        Store8(bb + m + half, blue, i);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Store4(Vector256<double> values, Span<byte> plane, int i)
    {
        for (int k = 0; k < 4; k++) plane[i + k] = ClipTruncate(values.GetElement(k));
    }

    private static (double H, double S, double V) RgbToHsvDegrees(byte r, byte g, byte b)
    {
        double max = Math.Max(r, Math.Max(g, b)), min = Math.Min(r, Math.Min(g, b)), d = max - min;
        double h = d == 0 ? 0 : max == r ? 60 * ((g - b) / d) : max == g ? 60 * ((b - r) / d) + 120 : 60 * ((r - g) / d) + 240;
        return (Wrap(h + 360, 360), max == 0 ? 0 : d / max, max); // h + 360 is in [300, 720)
    }

    private static (byte, byte, byte) HsvDegreesToRgb(double h, double s, double v)
    {
        double sixth = h / 60; // in [0, 6): fmod(sixth, 2) by exact subtractions
        double c = v * s, x = c * (1 - Math.Abs((sixth >= 4 ? sixth - 4 : sixth >= 2 ? sixth - 2 : sixth) - 1)), m = v - c;
        var (r, g, b) = (int)(h / 60) switch
        {
            0 => (c, x, 0.0),
            1 => (x, c, 0.0),
            2 => (0.0, c, x),
            3 => (0.0, x, c),
            4 => (x, 0.0, c),
            _ => (c, 0.0, x),
        };
        return (ClipTruncate(r + m + 0.5), ClipTruncate(g + m + 0.5), ClipTruncate(b + m + 0.5));
    }
}
