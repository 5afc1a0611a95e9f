using System.Buffers.Binary;
using System.Text;

namespace MimFlow.Torch.Elf;

/// <summary>One entry of a version-need list (<c>.gnu.version_r</c>): "this file needs version V of library F".</summary>
/// <param name="Library">The needed library's file name (vn_file), e.g. <c>libstdc++.so.6</c>.</param>
/// <param name="Version">The version name (vna_name), e.g. <c>GLIBCXX_3.4.32</c>.</param>
/// <param name="Index">The version index symbols refer to through <c>.gnu.version</c> (vna_other).</param>
/// <param name="Flags">vna_flags; <see cref="ElfImage.VersionFlagWeak"/> makes a missing version acceptable to the loader.</param>
/// <param name="FlagsOffset">File offset of the 16-bit vna_flags field.</param>
public sealed record VersionNeed(string Library, string Version, ushort Index, ushort Flags, long FlagsOffset)
{
    public bool IsWeak => (Flags & ElfImage.VersionFlagWeak) != 0;
}

/// <summary>A dynamic symbol with the version index it is bound to (0 local, 1 global, 2+ from the version tables).</summary>
public sealed record DynamicSymbol(int Index, string Name, ushort VersionIndex, bool IsDefined);

/// <summary>
/// A read-only view of the parts of an ELF64 little-endian shared object that symbol versioning involves:
/// the dynamic symbol table, its version indices, version needs and definitions, and the relocations that
/// refer to dynamic symbols. Only what the libstdc++ compatibility fix needs, read from section headers.
/// </summary>
public sealed class ElfImage
{
    public const ushort VersionFlagWeak = 0x2;

    private const uint SectionRela = 4;
    private const uint SectionRel = 9;
    private const uint SectionDynSym = 11;
    private const uint SectionVersionDefinitions = 0x6ffffffd;
    private const uint SectionVersionNeeds = 0x6ffffffe;
    private const uint SectionVersionSymbols = 0x6fffffff;

    private readonly byte[] bytes;
    private readonly string path;
    private readonly List<Section> sections = [];

    private ElfImage(byte[] bytes, string path)
    {
        this.bytes = bytes;
        this.path = path;
        ReadSectionHeaders();
        VersionNeeds = ReadVersionNeeds();
        VersionDefinitions = ReadVersionDefinitions();
        DynamicSymbols = ReadDynamicSymbols();
        RelocatedSymbolIndices = ReadRelocatedSymbolIndices();
    }

    public IReadOnlyList<VersionNeed> VersionNeeds { get; }

    /// <summary>Names of the versions this file defines (<c>.gnu.version_d</c>), e.g. GLIBCXX_3.4.30 in libstdc++.</summary>
    public IReadOnlyList<string> VersionDefinitions { get; }

    public IReadOnlyList<DynamicSymbol> DynamicSymbols { get; }

    /// <summary>Indices of dynamic symbols that some relocation (REL or RELA against .dynsym) refers to.</summary>
    public IReadOnlySet<int> RelocatedSymbolIndices { get; }

    public static ElfImage Read(string path) => Parse(File.ReadAllBytes(path), path);

    public static ElfImage Parse(byte[] bytes, string pathForMessages)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return new ElfImage(bytes, pathForMessages);
    }

    private void ReadSectionHeaders()
    {
        if (bytes.Length < 64) Fail("shorter than an ELF64 header");
        if (bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F') Fail("no ELF magic");
        if (bytes[4] != 2) Fail($"ELF class {bytes[4]} (only 64-bit is supported)");
        if (bytes[5] != 1) Fail($"data encoding {bytes[5]} (only little-endian is supported)");

        ulong sectionHeaderOffset = U64(40);
        ushort entrySize = U16(58);
        uint count = U16(60);
        uint namesIndex = U16(62);
        if (sectionHeaderOffset == 0) Fail("no section headers");
        if (entrySize < 64) Fail($"section header entry size {entrySize} < 64");
        if (count == 0 || namesIndex == 0xffff)
        {
            // Extended numbering: the real values live in section 0.
            var zero = ReadSection(sectionHeaderOffset);
            if (count == 0) count = checked((uint)zero.Size);
            if (namesIndex == 0xffff) namesIndex = zero.Link;
        }
        for (uint i = 0; i < count; i++)
            sections.Add(ReadSection(sectionHeaderOffset + (ulong)i * entrySize));
    }

    private Section ReadSection(ulong headerOffset)
    {
        long at = CheckRange(headerOffset, 64, "section header");
        var section = new Section(
            Type: U32(at + 4),
            Offset: U64(at + 24),
            Size: U64(at + 32),
            Link: U32(at + 40),
            Info: U32(at + 44),
            EntrySize: U64(at + 56));
        if (section.Type != 8 /* SHT_NOBITS */) CheckRange(section.Offset, section.Size, "section contents");
        return section;
    }

    private List<VersionNeed> ReadVersionNeeds()
    {
        var needs = new List<VersionNeed>();
        foreach (var section in sections.Where(s => s.Type == SectionVersionNeeds))
        {
            var strings = StringTable(section.Link);
            long entry = (long)section.Offset;
            for (uint n = 0; n < section.Info; n++)
            {
                CheckRange((ulong)entry, 16, "Verneed entry");
                ushort auxCount = U16(entry + 2);
                string library = strings.At(U32(entry + 4));
                long aux = entry + U32(entry + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    CheckRange((ulong)aux, 16, "Vernaux entry");
                    needs.Add(new VersionNeed(library, strings.At(U32(aux + 8)), Index: U16(aux + 6), Flags: U16(aux + 4), FlagsOffset: aux + 4));
                    uint nextAux = U32(aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = U32(entry + 12);
                if (next == 0) break;
                entry += next;
            }
        }
        return needs;
    }

    private List<string> ReadVersionDefinitions()
    {
        var definitions = new List<string>();
        foreach (var section in sections.Where(s => s.Type == SectionVersionDefinitions))
        {
            var strings = StringTable(section.Link);
            long entry = (long)section.Offset;
            for (uint n = 0; n < section.Info; n++)
            {
                CheckRange((ulong)entry, 20, "Verdef entry");
                ushort flags = U16(entry + 2);
                ushort auxCount = U16(entry + 6);
                const ushort baseDefinition = 0x1; // VER_FLG_BASE names the file itself, not a version.
                if (auxCount > 0 && (flags & baseDefinition) == 0)
                {
                    long aux = entry + U32(entry + 12);
                    CheckRange((ulong)aux, 8, "Verdaux entry");
                    definitions.Add(strings.At(U32(aux)));
                }
                uint next = U32(entry + 16);
                if (next == 0) break;
                entry += next;
            }
        }
        return definitions;
    }

    private List<DynamicSymbol> ReadDynamicSymbols()
    {
        var symbols = new List<DynamicSymbol>();
        int dynsymIndex = sections.FindIndex(s => s.Type == SectionDynSym);
        if (dynsymIndex < 0) return symbols;
        var dynsym = sections[dynsymIndex];
        var strings = StringTable(dynsym.Link);
        var versym = sections.FirstOrDefault(s => s.Type == SectionVersionSymbols);
        int count = (int)(dynsym.Size / 24);
        for (int i = 0; i < count; i++)
        {
            long at = (long)dynsym.Offset + i * 24L;
            ushort sectionIndex = U16(at + 6);
            ushort version = versym is null || (ulong)(i * 2 + 2) > versym.Size ? (ushort)1 : (ushort)(U16((long)versym.Offset + i * 2L) & 0x7fff);
            symbols.Add(new DynamicSymbol(i, strings.At(U32(at)), version, IsDefined: sectionIndex != 0));
        }
        return symbols;
    }

    private HashSet<int> ReadRelocatedSymbolIndices()
    {
        var referenced = new HashSet<int>();
        int dynsymIndex = sections.FindIndex(s => s.Type == SectionDynSym);
        foreach (var section in sections.Where(s => (s.Type == SectionRela || s.Type == SectionRel) && s.Link == dynsymIndex))
        {
            int entrySize = section.Type == SectionRela ? 24 : 16;
            for (ulong at = section.Offset; at + (ulong)entrySize <= section.Offset + section.Size; at += (ulong)entrySize)
            {
                int symbol = (int)(U64((long)at + 8) >> 32);
                if (symbol != 0) referenced.Add(symbol);
            }
        }
        return referenced;
    }

    private StringTableView StringTable(uint sectionIndex)
    {
        if (sectionIndex >= sections.Count) Fail($"string table section {sectionIndex} does not exist");
        var section = sections[(int)sectionIndex];
        return new StringTableView(this, section);
    }

    private long CheckRange(ulong offset, ulong length, string what)
    {
        if (offset > (ulong)bytes.Length || length > (ulong)bytes.Length - offset)
            Fail($"{what} at offset {offset} (+{length} bytes) lies outside the file ({bytes.Length} bytes)");
        return (long)offset;
    }

    private ushort U16(long at) => BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(checked((int)at), 2));
    private uint U32(long at) => BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(checked((int)at), 4));
    private ulong U64(long at) => BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(checked((int)at), 8));

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void Fail(string reason) => throw new ElfFormatException(path, reason);

    private sealed record Section(uint Type, ulong Offset, ulong Size, uint Link, uint Info, ulong EntrySize);

    private readonly struct StringTableView(ElfImage image, Section section)
    {
        public string At(uint offset)
        {
            if (offset >= section.Size) image.Fail($"string offset {offset} beyond its table ({section.Size} bytes)");
            var span = image.bytes.AsSpan((int)section.Offset + (int)offset, (int)(section.Size - offset));
            int end = span.IndexOf((byte)0);
            if (end < 0) image.Fail($"unterminated string at offset {offset}");
            return Encoding.UTF8.GetString(span[..end]);
        }
    }
}
