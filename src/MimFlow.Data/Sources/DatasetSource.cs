using MimFlow.Core.IO;
using MimFlow.Data.Sources.Layouts;

namespace MimFlow.Data.Sources;

/// <summary>How a dataset is stored: three folder layouts, WebDataset tar shards, Hugging Face <c>datasets</c> Parquet.</summary>
public enum DatasetLayout { ImageNet, Ade20k, Folder, Wds, HfParquet }

public enum DatasetSplit { Train, Validation }

/// <summary>How <see cref="DatasetSource.Open(string, DatasetLayout, DatasetOpenOptions)"/> lists a dataset.</summary>
public sealed record DatasetOpenOptions
{
    public DatasetSplit Split { get; init; } = DatasetSplit.Train;

    /// <summary>ImageNet with a flat <c>val/</c>: a file of "<c>file name</c> <c>label</c>" lines.</summary>
    public string? GroundTruth { get; init; }

    /// <summary>hf-parquet: bytes of decoded row groups kept for the next reads (LRU; the groups being read come on top).</summary>
    public long RowGroupCacheBytes { get; init; } = HfParquetSource.DefaultCacheBytes;
}

/// <summary>The command-line names of the layouts.</summary>
public static class DatasetLayouts
{
    public static IReadOnlyList<string> Names { get; } = ["imagenet", "ade20k", "folder", "wds", "hf-parquet"];

    public static string Name(DatasetLayout layout) => layout switch
    {
        DatasetLayout.ImageNet => "imagenet",
        DatasetLayout.Ade20k => "ade20k",
        DatasetLayout.Folder => "folder",
        DatasetLayout.Wds => "wds",
        _ => "hf-parquet",
    };

    public static DatasetLayout Parse(string name) => name switch
    {
        "imagenet" => DatasetLayout.ImageNet,
        "ade20k" => DatasetLayout.Ade20k,
        "folder" => DatasetLayout.Folder,
        "wds" => DatasetLayout.Wds,
        "hf-parquet" => DatasetLayout.HfParquet,
        _ => throw new ArgumentException($"unknown layout '{name}' ({string.Join(", ", Names)})"),
    };

    /// <summary>Layouts whose samples may carry class labels (classification).</summary>
    public static bool CanClassify(DatasetLayout layout) => layout is DatasetLayout.ImageNet or DatasetLayout.Wds or DatasetLayout.HfParquet;

    /// <summary>Layouts whose samples may carry label maps (segmentation).</summary>
    public static bool CanSegment(DatasetLayout layout) => layout is DatasetLayout.Ade20k or DatasetLayout.Wds or DatasetLayout.HfParquet;
}

/// <summary>
/// Lists a dataset in its layout, deterministically: folders and files in code-point order, one folder's names in
/// memory at a time, by the rules of <see cref="FolderWalk"/> (folder links below a class or root folder are not
/// followed, undecodable names are refused entries, nothing is opened). ImageNet: class folders of <c>train/</c> or <c>val/</c> (class index = sorted wnid order), or a
/// flat <c>val/</c> with a ground-truth file; ADE20K: images paired with annotations by name; folder: every image
/// anywhere below the root, unlabelled; wds: WebDataset tar shards (<see cref="WebDatasetSource"/>); hf-parquet:
/// Hugging Face <c>datasets</c> Parquet files (<see cref="HfParquetSource"/>).
/// </summary>
public static class DatasetSource
{
    private static readonly HashSet<string> ImageExtensions = new(StringComparer.OrdinalIgnoreCase) { ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif" };

    public static bool IsImageFile(string fileName) =>
        ImageExtensions.Contains(Path.GetExtension(fileName)) && !AtomicFile.IsTemporaryName(fileName);

    /// <param name="root">The dataset root folder; wds and hf-parquet also take a shard file or a brace pattern of them
    /// (<see cref="ShardSelection"/>).</param>
    /// <param name="groundTruth">ImageNet flat validation folder: a file of lines "<c>file name</c> <c>label</c>" where
    /// the label is a class index or a wnid (comma or white space separated).</param>
    public static SampleIndex Open(string root, DatasetLayout layout, DatasetSplit split = DatasetSplit.Train, string? groundTruth = null) =>
        Open(root, layout, new DatasetOpenOptions { Split = split, GroundTruth = groundTruth });

    public static SampleIndex Open(string root, DatasetLayout layout, DatasetOpenOptions options)
    {
        if (layout == DatasetLayout.Wds) return WebDatasetSource.Open(root, options.Split);
        if (layout == DatasetLayout.HfParquet) return HfParquetSource.Open(root, options.Split, options.RowGroupCacheBytes);
        root = Path.GetFullPath(root);
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"{root}: dataset folder not found");
        return layout switch
        {
            DatasetLayout.ImageNet => OpenImageNet(root, options.Split, options.GroundTruth),
            DatasetLayout.Ade20k => OpenAde20k(root, options.Split),
            _ => OpenFolder(root),
        };
    }

    private static SampleIndex OpenImageNet(string root, DatasetSplit split, string? groundTruth)
    {
        string splitFolder = ImageNetLayout.SplitFolder(root, split == DatasetSplit.Train);
        if (!Directory.Exists(splitFolder))
            throw new DirectoryNotFoundException($"{splitFolder}: the ImageNet layout needs {ImageNetLayout.TrainFolder}/ and {ImageNetLayout.ValidationFolder}/ below {root}");
        string splitName = Path.GetFileName(splitFolder);
        // Class names come from the training folders, so train and val agree on indices even if val misses a class.
        string classSource = Directory.Exists(ImageNetLayout.SplitFolder(root, true)) ? ImageNetLayout.SplitFolder(root, true) : splitFolder;
        var classes = SortedNames(Directory.EnumerateDirectories(classSource)).ToList();
        var builder = new PathTable();
        var defects = new Dictionary<int, string>();

        var flatFiles = SortedNames(Directory.EnumerateFiles(splitFolder)).Where(IsImageFile).ToList();
        if (flatFiles.Count > 0)
        {
            if (groundTruth is null)
                throw new InvalidDataException($"{splitFolder} holds images directly (flat layout): give the ground-truth file mapping file names to labels");
            var labels = ReadGroundTruth(groundTruth, classes);
            foreach (string file in flatFiles)
            {
                if (!labels.TryGetValue(file, out int label) && !labels.TryGetValue(Path.GetFileNameWithoutExtension(file), out label))
                    throw new InvalidDataException($"{groundTruth}: no label for {file}");
                builder.Add($"{splitName}/{file}", label);
            }
            return new SampleIndex(root, "imagenet", classes, new FolderStore(root, builder, null, defects));
        }

        var classIndex = classes.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);
        foreach (var (wnid, refused) in FolderWalk.ClassFolders(splitFolder, splitName))
        {
            if (!classIndex.TryGetValue(wnid, out int label))
                throw new InvalidDataException($"{Path.Combine(splitFolder, wnid)}: class folder not present in the training split");
            if (refused is not null)
            {
                defects[builder.Add($"{splitName}/{wnid}", -1)] = refused;
                continue;
            }
            // A file's label is the class folder it was found in, never another: the walk does not follow folder links.
            foreach (var entry in FolderWalk.FilesBelow(Path.Combine(splitFolder, wnid), $"{splitName}/{wnid}", IsImageFile))
                Add(builder, defects, entry, entry.Defect is null ? label : -1);
        }
        return new SampleIndex(root, "imagenet", classes, new FolderStore(root, builder, null, defects));
    }

    private static void Add(PathTable builder, Dictionary<int, string> defects, WalkEntry entry, int label)
    {
        int index = builder.Add(entry.RelativePath, label);
        if (entry.Defect is not null) defects[index] = entry.Defect;
    }

    private static Dictionary<string, int> ReadGroundTruth(string file, IReadOnlyList<string> classes)
    {
        var byWnid = classes.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);
        var labels = new Dictionary<string, int>(StringComparer.Ordinal);
        int lineNumber = 0;
        foreach (string line in RegularFile.ReadAllText(file, MaxListFileBytes).Split('\n'))
        {
            lineNumber++;
            string[] parts = line.Split([',', ' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) continue;
            if (parts.Length < 2) throw new InvalidDataException($"{file}:{lineNumber}: expected '<file name> <label>'");
            if (int.TryParse(parts[1], out int index) && index >= 0 && (classes.Count == 0 || index < classes.Count)) labels[parts[0]] = index;
            else if (byWnid.TryGetValue(parts[1], out index)) labels[parts[0]] = index;
            else if (lineNumber > 1) throw new InvalidDataException($"{file}:{lineNumber}: '{parts[1]}' is neither a class index nor a known wnid");
        }
        return labels;
    }

    private static SampleIndex OpenAde20k(string root, DatasetSplit split)
    {
        bool training = split == DatasetSplit.Train;
        string images = Ade20kLayout.ImagesFolder(root, training);
        if (!Directory.Exists(images))
            throw new DirectoryNotFoundException($"{images}: the ADE20K layout needs {Ade20kLayout.RootFolder}/images/ and annotations/ below {root}");
        string imagesRelative = Path.GetRelativePath(root, images).Replace(Path.DirectorySeparatorChar, '/');
        string annotationsRelative = Path.GetRelativePath(root, Ade20kLayout.AnnotationsFolder(root, training)).Replace(Path.DirectorySeparatorChar, '/');
        string annotations = Ade20kLayout.AnnotationsFolder(root, training);
        if (!Directory.Exists(annotations))
            throw new DirectoryNotFoundException($"{annotations}: the ADE20K layout needs {Ade20kLayout.RootFolder}/images/ and annotations/ below {root}");
        string AnnotationFor(string relative) =>
            annotationsRelative + "/" + Path.ChangeExtension(relative[(imagesRelative.Length + 1)..], Ade20kLayout.AnnotationExtension);
        var builder = new PathTable();
        var defects = new Dictionary<int, string>();
        foreach (var entry in FolderWalk.FilesBelow(images, imagesRelative, IsImageFile))
        {
            Add(builder, defects, entry, -1);
            if (entry.Defect is not null) continue;
            // An image without its label map is refused naming the file expected (one stat each, while listing).
            string expected = AnnotationFor(entry.RelativePath);
            if (RegularFile.KindOf(Path.Combine(root, expected.Replace('/', Path.DirectorySeparatorChar))) is FileKind.Missing or FileKind.BrokenLink)
                defects[builder.Count - 1] = $"no annotation: expected {expected}";
        }
        return new SampleIndex(root, "ade20k", Ade20kLayout.ClassNames, new FolderStore(root, builder, AnnotationFor, defects));
    }

    private static SampleIndex OpenFolder(string root)
    {
        var builder = new PathTable();
        var defects = new Dictionary<int, string>();
        foreach (var entry in FolderWalk.FilesBelow(root, "", IsImageFile))
            Add(builder, defects, entry, -1);
        return new SampleIndex(root, "folder", [], new FolderStore(root, builder, null, defects));
    }

    /// <summary>Largest ground-truth or class-name file read (a bound, so a device or a huge file is refused, not read).</summary>
    internal const long MaxListFileBytes = 64L << 20;

    internal static IEnumerable<string> SortedNames(IEnumerable<string> paths) =>
        paths.Select(p => Path.GetFileName(p)!).Order(CodePointComparer.Instance);
}
