using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace MimFlow.Pipelines.Definition;

/// <summary>What a stage's command accepts: its option names (without <c>--</c>) and its positional arguments, in order.</summary>
public sealed record CommandShape(IReadOnlySet<string> Options, IReadOnlyList<string> Arguments)
{
    public bool Accepts(string name) => Options.Contains(name) || Arguments.Contains(name);
}

/// <summary>The commands a pipeline may name (the CLI supplies them; tests supply their own).</summary>
public interface ICommandCatalog
{
    /// <summary>The shape of a command path such as <c>datasets synth</c>, or null if there is no such command.</summary>
    CommandShape? Find(string command);

    IEnumerable<string> Commands { get; }
}

/// <summary>
/// Reads a pipeline file and validates it completely before anything runs: JSON syntax, known keys, stage names,
/// commands and their options, references to stages and outputs, variables, output paths, and cycles. Every error
/// names the file, the stage and the reason.
/// </summary>
public static partial class PipelineFile
{
    private static readonly JsonDocumentOptions JsonOptions = new() { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true };
    private static readonly HashSet<string> PipelineKeys = ["pipeline", "description", "variables", "stages"];
    private static readonly HashSet<string> StageKeys = ["name", "command", "description", "parameters", "inputs", "outputs"];

    public static PipelineDefinition Load(string path, ICommandCatalog catalog, IReadOnlyDictionary<string, string>? variables = null)
    {
        if (!File.Exists(path)) throw new PipelineException(path, "no such pipeline file");
        return Parse(File.ReadAllText(path), path, catalog, variables);
    }

    /// <param name="overrides">Values for the pipeline's variables (<c>--var name=value</c>); each must be declared.</param>
    public static PipelineDefinition Parse(string json, string source, ICommandCatalog catalog, IReadOnlyDictionary<string, string>? overrides = null)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json, documentOptions: JsonOptions); }
        catch (JsonException e) { throw new PipelineException(source, $"not valid JSON: {e.Message}"); }
        if (root is not JsonObject document) throw new PipelineException(source, "the top level must be an object with \"pipeline\" and \"stages\"");
        UnknownKeys(source, "the pipeline", document, PipelineKeys);

        string name = RequiredText(source, "the pipeline", document, "pipeline");
        if (!NamePattern().IsMatch(name)) throw new PipelineException(source, $"pipeline name '{name}' must be lower-case letters, digits and dashes");
        var variables = ReadVariables(source, document["variables"], overrides);

        if (document["stages"] is not JsonArray stageNodes || stageNodes.Count == 0)
            throw new PipelineException(source, "\"stages\" must be a non-empty array");
        var stages = new List<StageDefinition>();
        foreach (var node in stageNodes)
        {
            var stage = ReadStage(source, node, variables, catalog);
            if (stages.Any(s => s.Name == stage.Name)) throw new PipelineException(source, $"two stages are named '{stage.Name}'");
            stages.Add(stage);
        }
        var pipeline = new PipelineDefinition(name, document["description"]?.GetValue<string>() ?? "", source, variables, stages);
        ValidateReferences(pipeline);
        ValidateOutputs(pipeline);
        PipelineOrder.Of(pipeline);
        return pipeline;
    }

    private static Dictionary<string, string> ReadVariables(string source, JsonNode? node, IReadOnlyDictionary<string, string>? overrides)
    {
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        if (node is not null)
        {
            if (node is not JsonObject declared) throw new PipelineException(source, "\"variables\" must be an object of name: value");
            foreach (var (key, value) in declared)
            {
                if (!VariablePattern().IsMatch(key)) throw new PipelineException(source, $"variable name '{key}' must be letters, digits and underscores");
                variables[key] = Scalar(value) ?? throw new PipelineException(source, $"variable '{key}' must be a string, number or boolean");
            }
        }
        foreach (var (key, value) in overrides ?? new Dictionary<string, string>())
        {
            if (!variables.ContainsKey(key))
                throw new PipelineException(source, $"--var {key}: the pipeline declares no variable '{key}' (declared: {(variables.Count == 0 ? "none" : string.Join(", ", variables.Keys))})");
            variables[key] = value;
        }
        return variables;
    }

    private static StageDefinition ReadStage(string source, JsonNode? node, IReadOnlyDictionary<string, string> variables, ICommandCatalog catalog)
    {
        if (node is not JsonObject stage) throw new PipelineException(source, "each stage must be an object");
        string name = RequiredText(source, "a stage", stage, "name");
        string where = $"stage '{name}'";
        if (!NamePattern().IsMatch(name)) throw new PipelineException(source, $"{where}: names are lower-case letters, digits and dashes (a dot separates stage and output in inputs)");
        UnknownKeys(source, where, stage, StageKeys);
        string command = RequiredText(source, where, stage, "command");
        var shape = catalog.Find(command)
            ?? throw new PipelineException(source, $"{where}: unknown command '{command}' (commands: {string.Join(", ", catalog.Commands)})");

        var parameters = new Dictionary<string, StageParameter>(StringComparer.Ordinal);
        foreach (var (key, value) in Section(source, where, stage, "parameters"))
        {
            Accepted(source, where, command, shape, "parameter", key);
            parameters[key] = value switch
            {
                JsonValue v when v.TryGetValue(out bool flag) => new StageParameter(null, flag),
                _ => new StageParameter(Substitute(source, where, Scalar(value) ?? throw new PipelineException(source, $"{where}: parameter '{key}' must be a string, number or boolean"), variables), null),
            };
        }
        var inputs = new Dictionary<string, StageInput>(StringComparer.Ordinal);
        foreach (var (key, value) in Section(source, where, stage, "inputs"))
        {
            Accepted(source, where, command, shape, "input", key);
            if (parameters.ContainsKey(key)) throw new PipelineException(source, $"{where}: '{key}' is both a parameter and an input");
            inputs[key] = ReadInput(source, where, key, value, variables);
        }
        var outputs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in Section(source, where, stage, "outputs"))
        {
            Accepted(source, where, command, shape, "output", key);
            if (parameters.ContainsKey(key) || inputs.ContainsKey(key)) throw new PipelineException(source, $"{where}: '{key}' is declared twice (output and parameter or input)");
            string path = Substitute(source, where, Scalar(value) ?? throw new PipelineException(source, $"{where}: output '{key}' must be a path inside the run folder"), variables);
            outputs[key] = RunRelativePath(source, where, key, path);
        }
        return new StageDefinition(name, command, stage["description"]?.GetValue<string>() ?? "", parameters, inputs, outputs);
    }

    private static StageInput ReadInput(string source, string where, string key, JsonNode? value, IReadOnlyDictionary<string, string> variables)
    {
        if (value is JsonObject external)
        {
            if (external.Count != 1 || Scalar(external["path"]) is not { } path)
                throw new PipelineException(source, $"{where}: input '{key}' as an object takes exactly {{\"path\": \"...\"}} (an existing file or folder)");
            return new StageInput(null, null, "", Substitute(source, where, path, variables));
        }
        string text = Scalar(value) ?? throw new PipelineException(source, $"{where}: input '{key}' must be \"STAGE.OUTPUT\" or {{\"path\": \"...\"}}");
        var match = ReferencePattern().Match(text);
        if (!match.Success)
            throw new PipelineException(source, $"{where}: input '{key}' is '{text}'; an earlier stage's output is written STAGE.OUTPUT[/sub/path], an existing path as {{\"path\": \"...\"}}");
        string subPath = match.Groups[3].Value.TrimStart('/');
        if (subPath.Split('/').Contains("..")) throw new PipelineException(source, $"{where}: input '{key}' may not leave its stage's output with '..'");
        return new StageInput(match.Groups[1].Value, match.Groups[2].Value, subPath, null);
    }

    private static void ValidateReferences(PipelineDefinition pipeline)
    {
        foreach (var stage in pipeline.Stages)
            foreach (var (key, input) in stage.Inputs.Where(i => i.Value.Stage is not null))
            {
                var upstream = pipeline.Stages.FirstOrDefault(s => s.Name == input.Stage)
                    ?? throw new PipelineException(pipeline.Source, $"stage '{stage.Name}': input '{key}' names stage '{input.Stage}', which is not declared");
                if (upstream == stage) throw new PipelineException(pipeline.Source, $"stage '{stage.Name}': input '{key}' reads its own output");
                if (!upstream.Outputs.ContainsKey(input.Output!))
                    throw new PipelineException(pipeline.Source, $"stage '{stage.Name}': missing input: '{key}' reads output '{input.Output}' of stage '{input.Stage}', which declares {(upstream.Outputs.Count == 0 ? "no outputs" : "only " + string.Join(", ", upstream.Outputs.Keys))}");
            }
    }

    /// <summary>Outputs are owned by one stage each: no two overlap, so a stage's fingerprint changes only when it runs.</summary>
    private static void ValidateOutputs(PipelineDefinition pipeline)
    {
        var owners = pipeline.Stages.SelectMany(s => s.Outputs.Select(o => (Stage: s.Name, Output: o.Key, Path: o.Value))).ToList();
        for (int i = 0; i < owners.Count; i++)
            for (int j = 0; j < owners.Count; j++)
            {
                var (a, b) = (owners[i], owners[j]);
                if (i != j && (a.Path == b.Path || a.Path.StartsWith(b.Path + "/", StringComparison.Ordinal)))
                    throw new PipelineException(pipeline.Source, $"stage '{a.Stage}' output '{a.Output}' ({a.Path}) overlaps stage '{b.Stage}' output '{b.Output}' ({b.Path}); each stage writes its own folder or file");
            }
    }

    private static string RunRelativePath(string source, string where, string key, string path)
    {
        string normal = path.Replace('\\', '/').Trim('/');
        if (path.Length == 0 || Path.IsPathRooted(path) || normal.Length == 0 || normal.Split('/').Any(p => p is ".." or "." or "") || normal.StartsWith(".mimflow", StringComparison.Ordinal))
            throw new PipelineException(source, $"{where}: output '{key}' is '{path}'; outputs are relative paths inside the run folder (no '..', not .mimflow)");
        return normal;
    }

    private static string Substitute(string source, string where, string text, IReadOnlyDictionary<string, string> variables) =>
        VariableUse().Replace(text, m => variables.TryGetValue(m.Groups[1].Value, out string? value)
            ? value
            : throw new PipelineException(source, $"{where}: '${{{m.Groups[1].Value}}}' is not a declared variable (declared: {(variables.Count == 0 ? "none" : string.Join(", ", variables.Keys))})"));

    private static void Accepted(string source, string where, string command, CommandShape shape, string kind, string key)
    {
        if (!shape.Accepts(key))
            throw new PipelineException(source, $"{where}: {kind} '{key}' is not an option of 'mimflow {command}' (it takes: {string.Join(", ", shape.Options.Order(StringComparer.Ordinal).Concat(shape.Arguments))})");
    }

    private static IEnumerable<KeyValuePair<string, JsonNode?>> Section(string source, string where, JsonObject stage, string key) => stage[key] switch
    {
        null => [],
        JsonObject section => section,
        _ => throw new PipelineException(source, $"{where}: \"{key}\" must be an object"),
    };

    private static string RequiredText(string source, string where, JsonObject node, string key) =>
        Scalar(node[key]) is { Length: > 0 } text ? text : throw new PipelineException(source, $"{where} has no \"{key}\"");

    private static string? Scalar(JsonNode? node) => node is JsonValue value ? value.GetValueKind() switch
    {
        JsonValueKind.String => value.GetValue<string>(),
        JsonValueKind.Number => value.ToJsonString(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => null,
    } : null;

    private static void UnknownKeys(string source, string where, JsonObject node, HashSet<string> known)
    {
        foreach (var (key, _) in node)
            if (!known.Contains(key)) throw new PipelineException(source, $"{where}: unknown key \"{key}\" (known: {string.Join(", ", known)})");
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]*$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex VariablePattern();

    [GeneratedRegex(@"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")]
    private static partial Regex VariableUse();

    [GeneratedRegex(@"^([a-z0-9][a-z0-9-]*)\.([A-Za-z0-9_-]+)(/.*)?$")]
    private static partial Regex ReferencePattern();
}
