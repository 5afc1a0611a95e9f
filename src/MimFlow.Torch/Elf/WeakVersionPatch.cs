namespace MimFlow.Torch.Elf;

/// <summary>A needed version that no relocation uses, yet the system library lacks; weakening it is harmless.</summary>
/// <param name="Need">The version need.</param>
/// <param name="Symbols">The dynamic symbols bound to that version (for messages).</param>
public sealed record MissingVersion(VersionNeed Need, IReadOnlyList<string> Symbols);

/// <summary>What loading a library on this system would trip over, and whether marking it weak fixes it.</summary>
/// <param name="Missing">Needed versions the providing library does not define.</param>
/// <param name="Blocking">Of those, the ones some relocation binds a symbol through: weakening them would leave
/// an unresolved symbol, so no patch may be made.</param>
public sealed record CompatibilityPlan(IReadOnlyList<MissingVersion> Missing, IReadOnlyList<MissingVersion> Blocking)
{
    public bool NeedsFix => Missing.Count > 0;
    public bool CanFix => Blocking.Count == 0;
}

/// <summary>
/// The libstdc++ compatibility fix (../shared/PLATFORM.md): a version need whose symbols nothing binds (GCC 13's
/// <c>std::ios_base_library_init</c> marker is the known case) is marked VER_FLG_WEAK, which makes the dynamic
/// loader accept a libstdc++ that lacks that version. Every other byte of the file stays as it was.
/// </summary>
public static class WeakVersionPatch
{
    /// <param name="image">The library to be loaded.</param>
    /// <param name="definedVersions">For a needed library's file name, the versions the copy this process would
    /// load defines; null when that library cannot be inspected (its needs are then left alone).</param>
    public static CompatibilityPlan Plan(ElfImage image, Func<string, IReadOnlySet<string>?> definedVersions)
    {
        var missing = new List<MissingVersion>();
        var blocking = new List<MissingVersion>();
        var definedByLibrary = new Dictionary<string, IReadOnlySet<string>?>(StringComparer.Ordinal);
        foreach (var need in image.VersionNeeds)
        {
            if (need.IsWeak) continue;
            if (!definedByLibrary.TryGetValue(need.Library, out var defined))
                definedByLibrary[need.Library] = defined = definedVersions(need.Library);
            if (defined is null || defined.Contains(need.Version)) continue;

            var bound = image.DynamicSymbols.Where(s => s.VersionIndex == need.Index).ToList();
            var entry = new MissingVersion(need, bound.Select(s => s.Name).ToList());
            missing.Add(entry);
            if (bound.Any(s => s.IsDefined || image.RelocatedSymbolIndices.Contains(s.Index))) blocking.Add(entry);
        }
        return new CompatibilityPlan(missing, blocking);
    }

    /// <summary>A copy of <paramref name="original"/> with VER_FLG_WEAK set on each of <paramref name="needs"/>.</summary>
    public static byte[] Apply(ReadOnlySpan<byte> original, IEnumerable<VersionNeed> needs)
    {
        byte[] patched = original.ToArray();
        foreach (var need in needs)
        {
            var flags = patched.AsSpan(checked((int)need.FlagsOffset), 2);
            ushort value = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(flags);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(flags, (ushort)(value | ElfImage.VersionFlagWeak));
        }
        return patched;
    }
}
