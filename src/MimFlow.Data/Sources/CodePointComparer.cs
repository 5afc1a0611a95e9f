using System.Text;

namespace MimFlow.Data.Sources;

/// <summary>
/// Orders names by Unicode code point (the order of their UTF-8 bytes, and of Python's <c>sorted</c>), so listings
/// are the same on every machine and culture, with non-ASCII names included. Ordinal UTF-16 comparison differs from
/// it only for characters above U+FFFF against U+E000..U+FFFF.
/// </summary>
public sealed class CodePointComparer : IComparer<string>
{
    public static CodePointComparer Instance { get; } = new();

    public int Compare(string? x, string? y)
    {
        if (ReferenceEquals(x, y)) return 0;
        if (x is null) return -1;
        if (y is null) return 1;
        var a = x.EnumerateRunes();
        var b = y.EnumerateRunes();
        while (true)
        {
            bool hasA = a.MoveNext(), hasB = b.MoveNext();
            if (!hasA || !hasB) return hasA.CompareTo(hasB);
            int difference = a.Current.Value.CompareTo(b.Current.Value);
            if (difference != 0) return difference;
        }
    }
}
