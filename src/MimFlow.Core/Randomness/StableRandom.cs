namespace MimFlow.Core.Randomness;

/// <summary>
/// A small, fast generator whose output is fixed by this code alone (unlike <see cref="Random"/>, whose seeded
/// sequence .NET does not promise to keep). Streams are derived from a seed plus any number of keys, e.g.
/// (seed, epoch, sample index), so every random decision can be recomputed independently of thread order.
/// Algorithm: xoshiro256** seeded through SplitMix64.
/// </summary>
public struct StableRandom
{
    private ulong s0, s1, s2, s3;

    public StableRandom(ulong seed)
    {
        ulong x = seed;
        s0 = SplitMix64(ref x);
        s1 = SplitMix64(ref x);
        s2 = SplitMix64(ref x);
        s3 = SplitMix64(ref x);
    }

    /// <summary>A stream determined by <paramref name="seed"/> and the ordered <paramref name="keys"/>.</summary>
    public static StableRandom For(ulong seed, params ReadOnlySpan<ulong> keys) => new(Derive(seed, keys));

    /// <summary>A stream for a named purpose, so unrelated decisions never share numbers.</summary>
    public static StableRandom For(ulong seed, string purpose, params ReadOnlySpan<ulong> keys) =>
        new(Derive(Derive(seed, [HashName(purpose)]), keys));

    public static ulong Derive(ulong seed, ReadOnlySpan<ulong> keys)
    {
        ulong state = seed ^ 0x6A09E667F3BCC909UL;
        ulong mixed = SplitMix64(ref state);
        foreach (ulong key in keys)
        {
            state = mixed ^ (key * 0x9E3779B97F4A7C15UL + 0xBB67AE8584CAA73BUL);
            mixed = SplitMix64(ref state);
        }
        return mixed;
    }

    /// <summary>FNV-1a over UTF-16 code units: stable across processes and runtimes (string.GetHashCode is not).</summary>
    public static ulong HashName(string name)
    {
        ulong hash = 0xCBF29CE484222325UL;
        foreach (char c in name)
        {
            hash ^= c;
            hash *= 0x100000001B3UL;
        }
        return hash;
    }

    public ulong NextUInt64()
    {
        ulong result = RotateLeft(s1 * 5, 7) * 9;
        ulong t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = RotateLeft(s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [<paramref name="min"/>, <paramref name="max"/>).</summary>
    public double Uniform(double min, double max) => min + (max - min) * NextDouble();

    /// <summary>Uniform integer in [0, <paramref name="exclusiveMax"/>), without modulo bias.</summary>
    public int NextInt(int exclusiveMax)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(exclusiveMax);
        ulong bound = (ulong)exclusiveMax;
        ulong threshold = (0UL - bound) % bound;
        while (true)
        {
            ulong r = NextUInt64();
            if (r >= threshold) return (int)(r % bound);
        }
    }

    /// <summary>Uniform integer in [<paramref name="min"/>, <paramref name="inclusiveMax"/>].</summary>
    public int NextInt(int min, int inclusiveMax) => min + NextInt(inclusiveMax - min + 1);

    public bool NextBool(double probabilityOfTrue) => NextDouble() < probabilityOfTrue;

    /// <summary>Fisher–Yates in place, from the last element down (the order every shuffle in MimFlow uses).</summary>
    public void Shuffle<T>(IList<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = NextInt(0, i);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary>Standard normal (Box–Muller).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
