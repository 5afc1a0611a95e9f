using System.CommandLine;
using MimFlow.Data.Sources;

namespace MimFlow.Cli.Commands;

/// <summary>
/// The options every command that reads a dataset shares, in one place: <c>--data</c>, <c>--layout</c> (the five
/// storage forms), <c>--split</c> and <c>--ground-truth</c>, and how they open a <see cref="SampleIndex"/>. Commands
/// choose which of them they take and their defaults; the meaning is the same everywhere.
/// </summary>
internal sealed class DataOptions
{
    public const string LayoutHelp =
        "imagenet (train/ and val/ class folders), ade20k (ADEChallengeData2016/), folder (every image below --data), " +
        "wds (WebDataset .tar shards: a folder, or a brace pattern such as /x/in1k-train-{0000..1023}.tar), " +
        "hf-parquet (Hugging Face datasets Parquet: a folder such as a repository's data/, a file or a pattern)";

    /// <param name="required">--data must be given (else it is optional, e.g. only one objective reads it).</param>
    /// <param name="defaultLayout">--layout's default; null: the user must give it.</param>
    /// <param name="defaultSplit">--split's default; null: the command has no --split (it reads both splits or one fixed one).</param>
    /// <param name="groundTruth">Offer --ground-truth (ImageNet's flat val/).</param>
    /// <param name="layouts">The layouts the command accepts (default: all).</param>
    /// <param name="layoutOptional">--layout may be left out with no default: the library decides (pretraining takes the shards' own).</param>
    public DataOptions(bool required = true, string? defaultLayout = null, string? defaultSplit = "train", bool groundTruth = true,
        string? dataDescription = null, IReadOnlyList<string>? layouts = null, bool layoutOptional = false)
    {
        Data = new Option<string>("--data")
        {
            Description = dataDescription ?? "Dataset: a root folder; wds and hf-parquet also a shard file or a brace pattern of them",
            Required = required,
        };
        var accepted = layouts ?? DatasetLayouts.Names;
        Layout = new Option<string>("--layout") { Description = $"How --data is stored: {LayoutHelp}", Required = defaultLayout is null && !layoutOptional };
        if (defaultLayout is not null) Layout.DefaultValueFactory = _ => defaultLayout;
        Layout.AcceptOnlyFromAmong([.. accepted]);
        if (defaultSplit is not null)
        {
            Split = new Option<string>("--split")
            {
                Description = "train or val (wds, hf-parquet: a train/ or val/ subfolder, else the shards whose names carry the split)",
                DefaultValueFactory = _ => defaultSplit,
            };
            Split.AcceptOnlyFromAmong("train", "val");
        }
        if (groundTruth) GroundTruth = new Option<string?>("--ground-truth") { Description = "imagenet with a flat val/: file of '<file name> <label>' lines" };
    }

    public Option<string> Data { get; }

    public Option<string> Layout { get; }

    public Option<string>? Split { get; }

    public Option<string?>? GroundTruth { get; }

    public void AddTo(Command command)
    {
        command.Options.Add(Data);
        command.Options.Add(Layout);
        if (Split is not null) command.Options.Add(Split);
        if (GroundTruth is not null) command.Options.Add(GroundTruth);
    }

    public DatasetSplit SplitOf(ParseResult parsed) => Split is not null && parsed.GetValue(Split) == "val" ? DatasetSplit.Validation : DatasetSplit.Train;

    /// <summary>The split the user typed, else null (the request's default applies).</summary>
    public DatasetSplit? SplitOrDefault(ParseResult parsed) => Split is not null && parsed.GetResult(Split) is { Implicit: false } ? SplitOf(parsed) : null;

    public DatasetLayout LayoutOf(ParseResult parsed) => DatasetLayouts.Parse(parsed.GetRequiredValue(Layout));

    /// <summary>The layout the user gave, else null (with <c>layoutOptional</c>: the library's default applies).</summary>
    public DatasetLayout? LayoutOrDefault(ParseResult parsed) => parsed.GetValue(Layout) is { } name ? DatasetLayouts.Parse(name) : null;

    public string? GroundTruthOf(ParseResult parsed) => GroundTruth is null ? null : parsed.GetValue(GroundTruth);

    public SampleIndex Open(ParseResult parsed) => Open(parsed, SplitOf(parsed));

    public SampleIndex Open(ParseResult parsed, DatasetSplit split) =>
        DatasetSource.Open(parsed.GetRequiredValue(Data), LayoutOf(parsed), split, GroundTruthOf(parsed));
}
