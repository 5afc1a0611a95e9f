using System.Diagnostics;
using System.Text.Json;
using MimFlow.Core.IO;
using MimFlow.Data.Checks;
using MimFlow.Data.Decoding;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;

namespace MimFlow.Tests.Data;

/// <summary>
/// Listing and reading trust nothing on disk: directory links are not followed below a class (or root) folder, a
/// class folder that is a link may not lead back into the split, an ancestor or another class; only regular files are
/// read, and never past the limit; every refusal says its true reason.
/// </summary>
public sealed class ListingTrustTests
{
    // Every read runs off the test's thread: a blocked open(2) then fails the test instead of hanging it.
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);
    private static readonly LoaderOptions ScanOptions = new() { DecodeWorkers = 2, ReadConcurrency = 2, BatchSize = 2 };

    /// <summary>Runs a shell command (names with raw bytes, FIFOs): what .NET's string APIs cannot make.</summary>
    internal static void Shell(string command)
    {
        using var process = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", command]) { RedirectStandardError = true })!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{command}: {error}");
    }

    private static List<JsonElement> QuarantineLines(string scanFolder)
    {
        string path = Path.Combine(scanFolder, "quarantine.jsonl");
        return File.Exists(path) ? File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList() : [];
    }

    private static string ReasonFor(List<JsonElement> lines, string path) =>
        lines.Single(l => l.GetProperty("path").GetString() == path).GetProperty("reason").GetString()!;

    [Fact]
    public async Task A_directory_link_below_a_class_folder_is_not_followed_and_is_reported_never_silently()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        foreach (string path in new[] { "train/n01/a.JPEG", "train/n01/b.JPEG", "train/n01/sub/c.JPEG", "train/n02/d.JPEG", "train/n02/e.JPEG", "train/n03/f.JPEG", "train/n03/g.JPEG" })
            TestImages.Write(dir.Combine(path.Split('/')), jpeg);
        // The reviewer's case: 7 images became 246 samples, n02's images under n01's label.
        Directory.CreateSymbolicLink(dir.Combine("train", "n01", "loop"), "..");
        Directory.CreateSymbolicLink(dir.Combine("train", "n01", "sub", "other"), "../../n02");

        var index = DatasetSource.Open(dir.Path, DatasetLayout.ImageNet);
        Assert.Equal(
            ["train/n01/a.JPEG", "train/n01/b.JPEG", "train/n01/loop", "train/n01/sub/c.JPEG", "train/n01/sub/other", "train/n02/d.JPEG", "train/n02/e.JPEG", "train/n03/f.JPEG", "train/n03/g.JPEG"],
            index.All().Select(s => s.RelativePath));
        Assert.Equal([0, 0, -1, 0, -1, 1, 1, 2, 2], index.All().Select(s => s.Label));

        var report = await Task.Run(() => DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions)).WaitAsync(Hang);
        Assert.Equal((9, 7, 2), (report.Listed, report.Ok, report.Quarantined));
        var lines = QuarantineLines(dir.Combine("scan"));
        Assert.Contains("a link to a folder", ReasonFor(lines, "train/n01/loop"));
        Assert.Contains("not followed", ReasonFor(lines, "train/n01/loop"));
        Assert.Contains("../../n02", ReasonFor(lines, "train/n01/sub/other"));

        // The folder layout and the plain folder check walk the same way.
        var folder = DatasetSource.Open(dir.Combine("train"), DatasetLayout.Folder);
        Assert.Equal(9, folder.Count);
        var check = DecodeCheck.Run(dir.Path);
        Assert.Equal(7, check.Images);
        Assert.Equal(2, check.Failures.Count);
        Assert.All(check.Failures, f => Assert.Contains("not followed", f.Reason));
    }

    [Fact]
    public async Task A_class_folder_may_be_a_link_but_not_to_the_split_folder_an_ancestor_or_another_class()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        TestImages.Write(dir.Combine("data", "train", "n01", "a.JPEG"), jpeg);
        TestImages.Write(dir.Combine("elsewhere", "n02", "b.JPEG"), jpeg);
        TestImages.Write(dir.Combine("elsewhere", "n02", "c.JPEG"), jpeg);
        // A subset assembled from links: allowed.
        Directory.CreateSymbolicLink(dir.Combine("data", "train", "n02"), dir.Combine("elsewhere", "n02"));
        Directory.CreateSymbolicLink(dir.Combine("data", "train", "n03"), ".");
        Directory.CreateSymbolicLink(dir.Combine("data", "train", "n04"), "n01");
        Directory.CreateSymbolicLink(dir.Combine("data", "train", "n05"), "../..");
        Directory.CreateSymbolicLink(dir.Combine("data", "train", "n06"), dir.Combine("elsewhere", "n02"));

        var index = DatasetSource.Open(dir.Combine("data"), DatasetLayout.ImageNet);
        // Every class keeps its index (the names are the classes), whatever is refused.
        Assert.Equal(["n01", "n02", "n03", "n04", "n05", "n06"], index.Classes);
        var samples = index.All().ToList();
        Assert.Equal(
            [("train/n01/a.JPEG", 0), ("train/n02/b.JPEG", 1), ("train/n02/c.JPEG", 1), ("train/n03", -1), ("train/n04", -1), ("train/n05", -1), ("train/n06", -1)],
            samples.Select(s => (s.RelativePath, s.Label)));
        var report = await Task.Run(() => DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions)).WaitAsync(Hang);
        Assert.Equal((3, 4), (report.Ok, report.Quarantined));
        var lines = QuarantineLines(dir.Combine("scan"));
        Assert.Contains("the split folder", ReasonFor(lines, "train/n03"));
        Assert.Contains("class n01", ReasonFor(lines, "train/n04"));
        Assert.Contains("an ancestor", ReasonFor(lines, "train/n05"));
        Assert.Contains("class n02", ReasonFor(lines, "train/n06"));
    }

    [Fact]
    public async Task A_file_link_that_points_outside_is_read_as_the_file_it_names_under_its_own_class()
    {
        using var dir = new TemporaryDirectory();
        byte[] jpeg = TestImages.Jpeg(40, 30);
        TestImages.Write(dir.Combine("data", "train", "n01", "a.JPEG"), jpeg);
        TestImages.Write(dir.Combine("data", "train", "n02", "b.JPEG"), jpeg);
        TestImages.Write(dir.Combine("outside", "x.jpg"), TestImages.Jpeg(50, 20));
        File.CreateSymbolicLink(dir.Combine("data", "train", "n02", "c.JPEG"), dir.Combine("outside", "x.jpg"));
        File.CreateSymbolicLink(dir.Combine("data", "train", "n02", "d.JPEG"), "../n01/a.JPEG");
        var index = DatasetSource.Open(dir.Combine("data"), DatasetLayout.ImageNet);
        Assert.Equal([("train/n01/a.JPEG", 0), ("train/n02/b.JPEG", 1), ("train/n02/c.JPEG", 1), ("train/n02/d.JPEG", 1)], index.All().Select(s => (s.RelativePath, s.Label)));
        Assert.Equal(File.ReadAllBytes(dir.Combine("outside", "x.jpg")), await index.ReadImageAsync(index[2]));
    }

    [Fact]
    public async Task Fifos_and_devices_named_like_images_are_quarantined_without_being_opened_by_scan_check_and_read()
    {
        using var dir = new TemporaryDirectory();
        string data = dir.Combine("data");
        TestImages.Write(Path.Combine(data, "train", "n01", "good.JPEG"), TestImages.Jpeg(40, 30));
        TestImages.Write(Path.Combine(data, "train", "n02", "good.JPEG"), TestImages.Jpeg(40, 30));
        Shell($"mkfifo '{Path.Combine(data, "train", "n01", "a.JPEG")}' '{Path.Combine(data, "train", "n01", "b.png")}'");
        File.CreateSymbolicLink(Path.Combine(data, "train", "n01", "zero.JPEG"), "/dev/zero");
        File.CreateSymbolicLink(Path.Combine(data, "train", "n02", "random.JPEG"), "/dev/urandom");
        File.CreateSymbolicLink(Path.Combine(data, "train", "n02", "gone.JPEG"), "/nowhere/at/all.jpg");

        var index = DatasetSource.Open(data, DatasetLayout.ImageNet);
        Assert.Equal(7, index.Count);
        long before = GC.GetTotalMemory(false);
        var report = await Task.Run(() => DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions)).WaitAsync(Hang);
        Assert.Equal((2, 5), (report.Ok, report.Quarantined));
        Assert.True(GC.GetTotalMemory(false) - before < 256L << 20, "reading a device must not grow memory");
        var lines = QuarantineLines(dir.Combine("scan"));
        Assert.Contains("not a regular file: it is a FIFO", ReasonFor(lines, "train/n01/a.JPEG"));
        Assert.Contains("not a regular file: it is a FIFO", ReasonFor(lines, "train/n01/b.png"));
        Assert.Contains("character device", ReasonFor(lines, "train/n01/zero.JPEG"));
        Assert.Contains("character device", ReasonFor(lines, "train/n02/random.JPEG"));
        Assert.Contains("symbolic link to nothing", ReasonFor(lines, "train/n02/gone.JPEG"));
        Assert.DoesNotContain(lines, l => l.GetProperty("reason").GetString()!.Contains("vanished"));

        var error = await Assert.ThrowsAsync<BadImageException>(async () => await Task.Run(() => index.ReadImageAsync(index.All().Single(s => s.RelativePath.EndsWith("a.JPEG"))).AsTask()).WaitAsync(Hang));
        Assert.Contains("FIFO", error.Reason);

        var layoutCheck = await Task.Run(() => DatasetCheck.RunAsync(new DatasetCheckRequest(data) { Layout = DatasetLayout.ImageNet, Workers = 2 })).WaitAsync(Hang);
        Assert.Equal(2, layoutCheck.Images);
        Assert.Equal(5, layoutCheck.Failures.Count);
        var folderCheck = await Task.Run(() => DecodeCheck.Run(data)).WaitAsync(Hang);
        Assert.Equal(2, folderCheck.Images);
        Assert.Equal(5, folderCheck.Failures.Count);
        Assert.Contains(folderCheck.Failures, f => f.Path.EndsWith("b.png") && f.Reason.Contains("FIFO"));
    }

    [Fact]
    public async Task Tokenize_quarantines_a_fifo_and_a_device_and_a_fifo_shard_is_refused_by_name_without_hanging()
    {
        using var fixture = await MimFlow.Tests.Precompute.TokenizeFixture.CreateAsync(images: 4);
        string classFolder = Directory.EnumerateDirectories(Path.Combine(fixture.Data, "train")).Order(StringComparer.Ordinal).First();
        Shell($"mkfifo '{Path.Combine(classFolder, "a_fifo.JPEG")}'");
        File.CreateSymbolicLink(Path.Combine(classFolder, "a_zero.JPEG"), "/dev/zero");
        string output = fixture.Combine("shards");
        var result = await Task.Run(() => MimFlow.Precompute.Tokenize.TokenizeJob.RunAsync(fixture.Request(output) with { TeacherDirectory = null })).WaitAsync(Hang);
        var lines = File.ReadAllLines(Path.Combine(output, "quarantine.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        string relative = Path.GetRelativePath(fixture.Data, classFolder).Replace('\\', '/');
        Assert.Contains("FIFO", ReasonFor(lines, $"{relative}/a_fifo.JPEG"));
        Assert.Contains("character device", ReasonFor(lines, $"{relative}/a_zero.JPEG"));
        Assert.Equal(3, result.Manifest.Quarantined);

        // A FIFO named like a tar shard: the listing names it instead of blocking on it.
        string wds = dir(fixture.Combine("wds"));
        Shell($"mkfifo '{Path.Combine(wds, "train-0000.tar")}'");
        var error = await Assert.ThrowsAsync<NotARegularFileException>(() => Task.Run(() => DatasetSource.Open(wds, DatasetLayout.Wds)).WaitAsync(Hang));
        Assert.Contains(Path.Combine(wds, "train-0000.tar"), error.Message);
        Assert.Contains("FIFO", error.Message);

        static string dir(string path)
        {
            Directory.CreateDirectory(path);
            return path;
        }
    }

    [Fact]
    public async Task Reads_stop_at_the_limit_whatever_size_the_file_reports()
    {
        using var dir = new TemporaryDirectory();
        // procfs files report size 0 and hold more: the reported size is not trusted either way.
        byte[] maps = await RegularFile.ReadAllBytesAsync("/proc/self/maps", 64 << 20);
        Assert.True(maps.Length > 100);
        var tooLarge = await Assert.ThrowsAsync<FileTooLargeException>(() => RegularFile.ReadAllBytesAsync("/proc/self/maps", 50));
        Assert.Contains("/proc/self/maps", tooLarge.Message);
        Assert.Equal(0, tooLarge.Reported);

        string file = dir.Combine("x.jpg");
        File.WriteAllBytes(file, new byte[1000]);
        Assert.Equal(1000, (await RegularFile.ReadAllBytesAsync(file, 1000)).Length);
        await Assert.ThrowsAsync<FileTooLargeException>(() => RegularFile.ReadAllBytesAsync(file, 999));
        var reader = new SampleReader(0, new DecodeLimits(MaxFileBytes: 999));
        Assert.Contains("exceeds the limit", (await Assert.ThrowsAsync<BadImageException>(() => reader.ReadAsync(file, CancellationToken.None))).Reason);

        Assert.Equal(FileKind.CharacterDevice, RegularFile.KindOf("/dev/zero"));
        Assert.Equal(FileKind.Directory, RegularFile.KindOf(dir.Path));
        Assert.Throws<NotARegularFileException>(() => RegularFile.OpenHandle("/dev/urandom").Dispose());
    }

    [Fact]
    public async Task An_undecodable_file_name_is_quarantined_under_its_escaped_bytes_not_as_a_vanished_file()
    {
        using var dir = new TemporaryDirectory();
        string data = dir.Combine("data");
        TestImages.Write(Path.Combine(data, "train", "n01", "good.JPEG"), TestImages.Jpeg(40, 30));
        TestImages.Write(Path.Combine(data, "train", "n02", "good.JPEG"), TestImages.Jpeg(40, 30));
        Shell($"cd '{Path.Combine(data, "train", "n01")}' && cp good.JPEG \"$(printf 'bad\\377\\376.JPEG')\" && mkdir \"$(printf 'dir\\377')\" && cp good.JPEG \"$(printf 'dir\\377')/inner.JPEG\"");

        var index = DatasetSource.Open(data, DatasetLayout.ImageNet);
        Assert.Equal(["train/n01/bad\\xFF\\xFE.JPEG", "train/n01/dir\\xFF", "train/n01/good.JPEG", "train/n02/good.JPEG"], index.All().Select(s => s.RelativePath).Order(StringComparer.Ordinal));
        var report = await Task.Run(() => DatasetScan.RunAsync(index, dir.Combine("scan"), DatasetSplit.Train, ScanOptions)).WaitAsync(Hang);
        Assert.Equal((2, 2), (report.Ok, report.Quarantined));
        var lines = QuarantineLines(dir.Combine("scan"));
        Assert.Contains("undecodable file name", ReasonFor(lines, "train/n01/bad\\xFF\\xFE.JPEG"));
        Assert.Contains("not valid UTF-8", ReasonFor(lines, "train/n01/dir\\xFF"));
        Assert.DoesNotContain(lines, l => l.GetProperty("reason").GetString()!.Contains("vanished"));

        // A class folder whose name does not decode: refused, not a listing that fails.
        Shell($"cd '{Path.Combine(data, "train")}' && mkdir \"$(printf 'n03\\377')\" && cp n02/good.JPEG \"$(printf 'n03\\377')/x.JPEG\"");
        var again = DatasetSource.Open(data, DatasetLayout.ImageNet);
        var refused = again.All().Single(s => s.RelativePath.StartsWith("train/n03", StringComparison.Ordinal));
        Assert.Contains("undecodable folder name", (await Assert.ThrowsAsync<BadImageException>(async () => await again.ReadImageAsync(refused))).Reason);
    }

    [Fact]
    public async Task A_missing_ade20k_annotation_is_quarantined_naming_the_path_expected()
    {
        using var dir = new TemporaryDirectory();
        await SyntheticDatasets.WriteAsync(new SynthesisOptions { Kind = SyntheticKind.Ade20k, OutputDirectory = dir.Path, Images = 5, MinSide = 48, MaxSide = 64 });
        string annotations = Path.Combine(dir.Path, "ADEChallengeData2016", "annotations", "training");
        string missing = Directory.GetFiles(annotations).Order(StringComparer.Ordinal).First();
        File.Delete(missing);
        var index = DatasetSource.Open(dir.Path, DatasetLayout.Ade20k);
        var error = await Assert.ThrowsAsync<BadImageException>(async () => await index.ReadImageAsync(index[0]));
        Assert.Contains("no annotation", error.Reason);
        Assert.Contains("ADEChallengeData2016/annotations/training/" + Path.GetFileName(missing), error.Reason);
        Assert.DoesNotContain("vanished", error.Reason);
    }
}
