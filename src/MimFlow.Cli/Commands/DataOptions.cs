using System.CommandLine;
using MimFlow.Data.Sources;

namespace MimFlow.Cli.Commands;

/// <summary>The options every command that reads a dataset shares.</summary>
internal sealed class DataOptions
{
    public Option<string> Data { get; } = new("--data") { Description = "Dataset root folder", Required = true };

    public Option<string> Layout { get; } = LayoutOption();

    public Option<string> Split { get; } = SplitOption();

    public Option<string?> GroundTruth { get; } = new("--ground-truth") { Description = "imagenet with a flat val/: file of '<file name> <label>' lines" };

    public void AddTo(Command command)
    {
        command.Options.Add(Data);
        command.Options.Add(Layout);
        command.Options.Add(Split);
        command.Options.Add(GroundTruth);
    }

    public DatasetSplit SplitOf(ParseResult parsed) => parsed.GetValue(Split) == "val" ? DatasetSplit.Validation : DatasetSplit.Train;

    public DatasetLayout LayoutOf(ParseResult parsed) =>
        parsed.GetRequiredValue(Layout) switch { "imagenet" => DatasetLayout.ImageNet, "ade20k" => DatasetLayout.Ade20k, _ => DatasetLayout.Folder };

    public SampleIndex Open(ParseResult parsed) => DatasetSource.Open(parsed.GetRequiredValue(Data), LayoutOf(parsed), SplitOf(parsed), parsed.GetValue(GroundTruth));

    private static Option<string> LayoutOption()
    {
        var option = new Option<string>("--layout") { Description = "imagenet, ade20k or folder", Required = true };
        option.AcceptOnlyFromAmong("imagenet", "ade20k", "folder");
        return option;
    }

    private static Option<string> SplitOption()
    {
        var option = new Option<string>("--split") { Description = "train or val", DefaultValueFactory = _ => "train" };
        option.AcceptOnlyFromAmong("train", "val");
        return option;
    }
}
