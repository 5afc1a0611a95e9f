using MimFlow.Pipelines.Definition;

namespace MimFlow.Tests.Pipelines;

public sealed class PipelineFileTests
{
    private static PipelineDefinition Parse(string stages, string variables = "{}", IReadOnlyDictionary<string, string>? overrides = null) =>
        PipelineFile.Parse($$"""{ "pipeline": "test", "variables": {{variables}}, "stages": [ {{stages}} ] }""", "test.json", new FakeStages(), overrides);

    private static string Error(string stages, string variables = "{}") =>
        Assert.Throws<PipelineException>(() => Parse(stages, variables)).Message;

    [Fact]
    public void Stages_run_after_the_stages_they_read_from_otherwise_in_declaration_order()
    {
        var pipeline = Parse("""
            { "name": "c", "command": "append", "inputs": { "from": "b.out" }, "outputs": { "out": "c" } },
            { "name": "a", "command": "write", "outputs": { "out": "a" } },
            { "name": "b", "command": "append", "inputs": { "from": "a.out" }, "outputs": { "out": "b" } },
            { "name": "d", "command": "write", "outputs": { "out": "d" } }
            """);
        Assert.Equal(["a", "b", "c", "d"], PipelineOrder.Of(pipeline).Select(s => s.Name));
        Assert.Equal(["b", "c"], PipelineOrder.Downstream(pipeline, "a").Order());
    }

    [Fact]
    public void A_cycle_is_refused_naming_its_stages()
    {
        string message = Error("""
            { "name": "a", "command": "append", "inputs": { "from": "b.out" }, "outputs": { "out": "a" } },
            { "name": "b", "command": "append", "inputs": { "from": "a.out" }, "outputs": { "out": "b" } }
            """);
        Assert.StartsWith("test.json: the stages form a cycle", message);
        Assert.Contains("a → b → a", message);
    }

    [Theory]
    [InlineData("""{ "name": "a", "command": "append", "inputs": { "from": "nope.out" }, "outputs": { "out": "a" } }""", "input 'from' names stage 'nope', which is not declared")]
    [InlineData("""{ "name": "w", "command": "write", "outputs": { "out": "w" } }, { "name": "a", "command": "append", "inputs": { "from": "w.result" }, "outputs": { "out": "a" } }""", "missing input: 'from' reads output 'result' of stage 'w'")]
    [InlineData("""{ "name": "a", "command": "compile", "outputs": { "out": "a" } }""", "stage 'a': unknown command 'compile'")]
    [InlineData("""{ "name": "a", "command": "write", "parameters": { "colour": "red" }, "outputs": { "out": "a" } }""", "parameter 'colour' is not an option of 'mimflow write'")]
    [InlineData("""{ "name": "a", "command": "write", "outputs": { "out": "a" } }, { "name": "a", "command": "write", "outputs": { "out": "b" } }""", "two stages are named 'a'")]
    [InlineData("""{ "name": "a", "command": "write", "outputs": { "out": "../elsewhere" } }""", "outputs are relative paths inside the run folder")]
    [InlineData("""{ "name": "a", "command": "write", "outputs": { "out": "x" } }, { "name": "b", "command": "write", "outputs": { "out": "x/y" } }""", "overlaps stage 'a' output 'out'")]
    [InlineData("""{ "name": "a", "command": "write", "parameters": { "text": "${missing}" }, "outputs": { "out": "a" } }""", "'${missing}' is not a declared variable")]
    [InlineData("""{ "name": "a", "command": "write", "outputs": { "out": "a" }, "retries": 3 }""", "unknown key \"retries\"")]
    [InlineData("""{ "name": "A b", "command": "write" }""", "names are lower-case letters, digits and dashes")]
    public void An_invalid_pipeline_is_refused_with_the_file_and_the_reason(string stages, string reason)
    {
        string message = Error(stages);
        Assert.StartsWith("test.json: ", message);
        Assert.Contains(reason, message);
    }

    [Fact]
    public void Bad_json_names_the_file() =>
        Assert.StartsWith("broken.json: not valid JSON", Assert.Throws<PipelineException>(() => PipelineFile.Parse("{ \"pipeline\": ", "broken.json", new FakeStages())).Message);

    [Fact]
    public void Variables_are_substituted_and_can_be_overridden_but_only_if_declared()
    {
        const string stages = """{ "name": "a", "command": "write", "parameters": { "text": "seed=${seed}" }, "outputs": { "out": "runs/${seed}" } }""";
        var pipeline = Parse(stages, """{ "seed": 7 }""");
        Assert.Equal("seed=7", pipeline.Stage("a").Parameters["text"].Text);
        Assert.Equal("runs/7", pipeline.Stage("a").Outputs["out"]);
        Assert.Equal("seed=9", Parse(stages, """{ "seed": 7 }""", new Dictionary<string, string> { ["seed"] = "9" }).Stage("a").Parameters["text"].Text);
        Assert.Contains("declares no variable 'sede'",
            Assert.Throws<PipelineException>(() => Parse(stages, """{ "seed": 7 }""", new Dictionary<string, string> { ["sede"] = "9" })).Message);
    }

    [Fact]
    public void Inputs_name_an_output_with_an_optional_sub_path_or_an_existing_path()
    {
        var pipeline = Parse("""
            { "name": "a", "command": "write", "outputs": { "out": "a" } },
            { "name": "b", "command": "append", "inputs": { "from": "a.out/sub/dir" }, "outputs": { "out": "b" } },
            { "name": "c", "command": "append", "inputs": { "from": { "path": "/data/x" } }, "outputs": { "out": "c" } }
            """);
        Assert.Equal(new StageInput("a", "out", "sub/dir", null), pipeline.Stage("b").Inputs["from"]);
        Assert.Equal("/data/x", pipeline.Stage("c").Inputs["from"].ExternalPath);
    }
}
