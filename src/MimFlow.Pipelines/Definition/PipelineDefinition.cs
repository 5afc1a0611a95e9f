namespace MimFlow.Pipelines.Definition;

/// <summary>A declared stage graph (<c>pipelines/*.json</c>, schema in pipelines/README.md).</summary>
/// <param name="Source">The file it was read from (or the embedded resource's name), for error messages.</param>
/// <param name="Stages">In declaration order; <see cref="PipelineOrder"/> gives the run order.</param>
public sealed record PipelineDefinition(string Name, string Description, string Source, IReadOnlyDictionary<string, string> Variables, IReadOnlyList<StageDefinition> Stages)
{
    public StageDefinition Stage(string name) =>
        Stages.FirstOrDefault(s => s.Name == name) ?? throw new PipelineException(Source, $"no stage named '{name}' (stages: {string.Join(", ", Stages.Select(s => s.Name))})");
}

/// <summary>
/// One stage: a <c>mimflow</c> command with its parameters (options or arguments with fixed values), its inputs (earlier
/// stages' outputs or existing paths) and its outputs (paths inside the run folder). Every value ends up as a
/// command-line option or argument of the same name.
/// </summary>
public sealed record StageDefinition(
    string Name,
    string Command,
    string Description,
    IReadOnlyDictionary<string, StageParameter> Parameters,
    IReadOnlyDictionary<string, StageInput> Inputs,
    IReadOnlyDictionary<string, string> Outputs)
{
    /// <summary>The stages whose outputs this one reads.</summary>
    public IEnumerable<string> Upstream => Inputs.Values.Select(i => i.Stage).OfType<string>().Distinct();
}

/// <summary>A fixed value: text (variables substituted) or a flag (true: given, false: left out).</summary>
public sealed record StageParameter(string? Text, bool? Flag)
{
    public override string ToString() => Text ?? (Flag == true ? "true" : "false");
}

/// <summary>Either <c>STAGE.OUTPUT[/sub/path]</c> (an earlier stage's output) or an existing path outside the run.</summary>
public sealed record StageInput(string? Stage, string? Output, string SubPath, string? ExternalPath)
{
    public override string ToString() => ExternalPath ?? $"{Stage}.{Output}{(SubPath.Length > 0 ? "/" + SubPath : "")}";
}

/// <summary>A pipeline that cannot be read, is not valid, or cannot run as asked; the message names the file and the reason.</summary>
public sealed class PipelineException(string source, string reason) : Exception($"{source}: {reason}")
{
    public string PipelineSource { get; } = source;
}
