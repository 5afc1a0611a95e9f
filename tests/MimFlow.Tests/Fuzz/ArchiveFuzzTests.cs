using MimFlow.Data.Packing;
using MimFlow.Data.Pipeline;
using MimFlow.Data.Scan;
using MimFlow.Data.Sources;
using MimFlow.Datasets.Synthetic;
using MimFlow.Tests.Data;
using Xunit.Abstractions;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged WebDataset tars and Hugging Face Parquet files, listed and scanned: the listing refuses the file naming it,
/// or lists samples that a scan then accounts for one by one (ok, or quarantined with a reason naming the place).
/// </summary>
public sealed class ArchiveFuzzTests(ITestOutputHelper output)
{
    private static readonly LoaderOptions ScanOptions = new() { DecodeWorkers = 1, ReadConcurrency = 1, BatchSize = 4, ReadRetries = 0 };

    private static async Task<string> Folder(TemporaryDirectory dir)
    {
        string folder = dir.Combine("folder");
        await SyntheticDatasets.WriteAsync(new SynthesisOptions
        {
            Kind = SyntheticKind.ImageNet, OutputDirectory = folder, Images = 6, Classes = 2, MinSide = 32, MaxSide = 48, ValidationFraction = 0,
        });
        return folder;
    }

    /// <summary>Lists <paramref name="data"/> and scans it; a listed sample must end ok or quarantined, with a reason.</summary>
    private static void ListAndScan(string data, DatasetLayout layout, string scanFolder)
    {
        var index = DatasetSource.Open(data, layout);
        var report = DatasetScan.RunAsync(index, scanFolder, DatasetSplit.Train, ScanOptions).GetAwaiter().GetResult();
        if (report.Ok + report.Quarantined != index.Count) throw new InvalidOperationException($"{report.Ok} ok + {report.Quarantined} quarantined of {index.Count}");
        string quarantine = Path.Combine(scanFolder, "quarantine.jsonl");
        if (File.Exists(quarantine))
            foreach (string line in File.ReadLines(quarantine))
                if (System.Text.Json.JsonDocument.Parse(line).RootElement.GetProperty("reason").GetString() is not { Length: > 0 })
                    throw new InvalidOperationException($"a quarantine line without a reason: {line}");
    }

    [Fact]
    public async Task Damaged_tar_shards_are_listed_and_scanned_or_refused_naming_the_tar()
    {
        using var dir = new TemporaryDirectory();
        string folder = await Folder(dir);
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Format = PackFormat.Wds, OutputDirectory = dir.Combine("packed"), Split = DatasetSplit.Train });
        string tar = Directory.GetFiles(dir.Combine("packed", "train"), "*.tar").Single();
        byte[] original = File.ReadAllBytes(tar);
        string data = dir.Combine("case", "train"), target = Path.Combine(data, Path.GetFileName(tar));
        Directory.CreateDirectory(data);
        File.Copy(dir.Combine("packed", "classes.json"), dir.Combine("case", "classes.json"));
        // Headers sit at multiples of 512: aim there (name, size, checksum, type fields) as well as anywhere.
        var headers = Enumerable.Range(0, original.Length / 512).Select(b => b * 512).Where(o => original[o] != 0).SelectMany(o => new[] { o + 124, o + 148, o + 156 }).ToList();
        var run = new FuzzRun("tar shards", output);
        foreach (var fuzz in Mutations.Of(original, 401, 60, headers))
        {
            File.WriteAllBytes(target, fuzz.Bytes);
            run.Case($"tar {fuzz.Label}", () => ListAndScan(data, DatasetLayout.Wds, dir.Combine("scan")), [target], typeof(InvalidDataException));
        }
        run.Finish();
    }

    [Fact]
    public async Task Damaged_parquet_datasets_are_listed_and_scanned_or_refused_naming_the_file()
    {
        using var dir = new TemporaryDirectory();
        string folder = await Folder(dir);
        await DatasetPacker.PackAsync(new PackRequest { From = folder, Format = PackFormat.HfParquet, OutputDirectory = dir.Combine("packed"), Split = DatasetSplit.Train, RowGroupRows = 2 });
        string file = Directory.GetFiles(dir.Combine("packed", "data"), "*.parquet").Single();
        byte[] original = File.ReadAllBytes(file);
        string data = dir.Combine("case"), target = Path.Combine(data, Path.GetFileName(file));
        Directory.CreateDirectory(data);
        int footer = original.Length - 8 - BitConverter.ToInt32(original, original.Length - 8);
        var run = new FuzzRun("parquet datasets", output);
        foreach (var fuzz in Mutations.Of(original, 402, 60, [4, footer, footer + 64]))
        {
            File.WriteAllBytes(target, fuzz.Bytes);
            run.Case($"parquet {fuzz.Label}", () => ListAndScan(target, DatasetLayout.HfParquet, dir.Combine("scan")), [target], typeof(InvalidDataException));
        }
        run.Finish();
    }
}
