using MimFlow.Torch.Backend;
using MimFlow.Torch.Elf;

namespace MimFlow.Tests.Torch;

public sealed class WeakVersionPatchTests
{
    private const string Marker = "GLIBCXX_3.4.32";
    private static readonly byte[] Original = File.ReadAllBytes(TorchNativeFiles.Bridge);
    private static readonly ElfImage Image = ElfImage.Parse(Original, TorchNativeFiles.Bridge);

    /// <summary>A system that defines every version the bridge needs, minus <paramref name="lacking"/>.</summary>
    private static Func<string, IReadOnlySet<string>?> SystemLacking(params string[] lacking) => library =>
        Image.VersionNeeds.Where(n => n.Library == library && !lacking.Contains(n.Version)).Select(n => n.Version).ToHashSet();

    [Fact]
    public void Bridge_needs_the_marker_version_from_libstdcxx_as_a_strong_need()
    {
        var need = Assert.Single(Image.VersionNeeds, n => n.Version == Marker);
        Assert.Equal("libstdc++.so.6", need.Library);
        Assert.False(need.IsWeak);
        var bound = Image.DynamicSymbols.Where(s => s.VersionIndex == need.Index).ToList();
        Assert.Equal("_ZSt21ios_base_library_initv", Assert.Single(bound).Name);
        Assert.DoesNotContain(bound[0].Index, Image.RelocatedSymbolIndices);
    }

    [Fact]
    public void Plan_asks_for_no_fix_when_the_system_has_every_version()
    {
        var plan = WeakVersionPatch.Plan(Image, SystemLacking());
        Assert.False(plan.NeedsFix);
    }

    [Fact]
    public void Plan_weakens_exactly_the_missing_marker_version()
    {
        var plan = WeakVersionPatch.Plan(Image, SystemLacking(Marker));
        Assert.True(plan.NeedsFix);
        Assert.True(plan.CanFix);
        var missing = Assert.Single(plan.Missing);
        Assert.Equal(Marker, missing.Need.Version);
        Assert.Equal(["_ZSt21ios_base_library_initv"], missing.Symbols);
    }

    [Fact]
    public void Patch_flips_the_need_to_weak_and_changes_nothing_else()
    {
        var plan = WeakVersionPatch.Plan(Image, SystemLacking(Marker));
        byte[] patched = WeakVersionPatch.Apply(Original, plan.Missing.Select(m => m.Need));

        Assert.Equal(Original.Length, patched.Length);
        var differing = Enumerable.Range(0, Original.Length).Where(i => Original[i] != patched[i]).ToList();
        long flagsOffset = plan.Missing[0].Need.FlagsOffset;
        Assert.Equal([(int)flagsOffset], differing);

        var reread = ElfImage.Parse(patched, "patched");
        foreach (var (before, after) in Image.VersionNeeds.Zip(reread.VersionNeeds))
        {
            Assert.Equal((before.Library, before.Version, before.Index), (after.Library, after.Version, after.Index));
            Assert.Equal(before.Version == Marker ? (ushort)(before.Flags | ElfImage.VersionFlagWeak) : before.Flags, after.Flags);
        }
    }

    [Fact]
    public void A_missing_version_that_relocations_use_cannot_be_weakened()
    {
        string used = Image.VersionNeeds
            .Where(n => n.Library == "libstdc++.so.6")
            .First(n => Image.DynamicSymbols.Any(s => s.VersionIndex == n.Index && Image.RelocatedSymbolIndices.Contains(s.Index)))
            .Version;
        var plan = WeakVersionPatch.Plan(Image, SystemLacking(Marker, used));
        Assert.False(plan.CanFix);
        Assert.Equal(used, Assert.Single(plan.Blocking).Need.Version);

        var error = Assert.Throws<TorchBackendException>(() =>
            LibTorchSharpCompatibility.Prepare(TorchNativeFiles.Bridge, Path.GetTempPath(), SystemLacking(Marker, used)));
        Assert.Contains(TorchNativeFiles.Bridge, error.Message);
        Assert.Contains(used, error.Message);
    }

    [Fact]
    public void Prepare_loads_the_original_when_no_fix_is_needed()
    {
        using var cache = new TemporaryDirectory();
        var (path, fix) = LibTorchSharpCompatibility.Prepare(TorchNativeFiles.Bridge, cache.Path, SystemLacking());
        Assert.Equal(TorchNativeFiles.Bridge, path);
        Assert.False(fix.Applied);
        Assert.Empty(Directory.EnumerateFileSystemEntries(cache.Path));
    }

    [Fact]
    public void Concurrent_preparations_share_one_complete_cached_copy_and_leave_the_original_alone()
    {
        using var cache = new TemporaryDirectory();
        byte[] before = File.ReadAllBytes(TorchNativeFiles.Bridge);
        var results = new (string Path, CompatibilityFix Fix)[8];
        Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 },
            i => results[i] = LibTorchSharpCompatibility.Prepare(TorchNativeFiles.Bridge, cache.Path, SystemLacking(Marker)));

        string copy = Assert.Single(results.Select(r => r.Path).Distinct());
        Assert.StartsWith(cache.Path, copy);
        Assert.All(results, r => Assert.Equal(["libstdc++.so.6:" + Marker], r.Fix.WeakenedVersions));
        var reread = ElfImage.Read(copy);
        Assert.True(reread.VersionNeeds.Single(n => n.Version == Marker).IsWeak);
        Assert.Equal(before, File.ReadAllBytes(TorchNativeFiles.Bridge));
        Assert.Equal([copy], Directory.EnumerateFiles(cache.Path, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void The_loaded_bridge_is_patched_exactly_when_this_system_lacks_the_marker_version()
    {
        var info = TorchBackend.EnsureLoaded();
        string libstdcxx = LoadedLibraries.MappedPath("libstdc++.so.6") ?? throw new InvalidOperationException("libstdc++ not mapped");
        bool systemHasMarker = ElfImage.Read(libstdcxx).VersionDefinitions.Contains(Marker);
        Assert.Equal(!systemHasMarker, info.Fix.Applied);
        Assert.Equal(info.Fix.Applied ? info.Fix.PatchedCopy : TorchNativeFiles.Bridge, info.LibTorchSharpPath);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(10)]
    [InlineData(63)]
    public void Truncated_or_foreign_files_are_rejected_with_the_path_and_reason(int length)
    {
        var error = Assert.Throws<ElfFormatException>(() => ElfImage.Parse(Original[..length], "/x/lib.so"));
        Assert.Equal("/x/lib.so", error.Path);
        Assert.Contains("/x/lib.so", error.Message);
        Assert.Contains("shorter than an ELF64 header", error.Reason);
    }

    [Fact]
    public void Section_headers_pointing_past_the_end_are_rejected()
    {
        byte[] cut = Original[..(Original.Length / 2)];
        var error = Assert.Throws<ElfFormatException>(() => ElfImage.Parse(cut, "half.so"));
        Assert.Contains("outside the file", error.Reason);

        byte[] notElf = (byte[])Original.Clone();
        notElf[1] = (byte)'X';
        Assert.Contains("no ELF magic", Assert.Throws<ElfFormatException>(() => ElfImage.Parse(notElf, "x.so")).Reason);
    }
}
