using System.Text.Json.Nodes;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Interop;
using MimFlow.Tests.Models;
using MimFlow.Torch.Backend;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged model directories (config.json + weights.safetensors of each kind) and damaged configurations of the
/// imports (timm_config.json, a timm hub folder's config.json, transformers' config.json): each case loads a model
/// whose parameters are the file's, or is refused with an InvalidDataException naming the file.
/// </summary>
public sealed class ModelFilesFuzzTests(ITestOutputHelper output)
{
    private static readonly Type[] Refusals = [typeof(InvalidDataException)];

    [Theory]
    [InlineData("vit")]
    [InlineData("beit")]
    [InlineData("vqkd")]
    [InlineData("dvae")]
    public void Damaged_model_directories_load_or_are_refused_naming_the_file(string kind)
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun($"model directory ({kind})", output);
        string pristine = TinyModels.Write(dir.Combine("pristine"), kind);
        byte[] config = File.ReadAllBytes(Path.Combine(pristine, ModelDirectory.ConfigFileName));
        byte[] weights = File.ReadAllBytes(Path.Combine(pristine, ModelDirectory.WeightsFileName));
        string model = dir.Combine("case");
        Directory.CreateDirectory(model);
        int seed = kind.Length * 31;

        void Load(string label, byte[] configBytes, byte[] weightBytes)
        {
            File.WriteAllBytes(Path.Combine(model, ModelDirectory.ConfigFileName), configBytes);
            File.WriteAllBytes(Path.Combine(model, ModelDirectory.WeightsFileName), weightBytes);
            run.Case(label, () =>
            {
                var (_, network) = ModelDirectory.Load(model);
                using (network)
                using (var file = SafetensorsFile.Open(Path.Combine(model, ModelDirectory.WeightsFileName)))
                {
                    // Accepted: the module's parameters are exactly the file's tensors (names and shapes).
                    var state = network.state_dict();
                    if (state.Count != file.Entries.Count) throw new InvalidOperationException($"{state.Count} parameters, {file.Entries.Count} tensors");
                    foreach (var (name, tensor) in state)
                        if (!file.Contains(name) || !file[name].Shape.SequenceEqual(tensor.shape)) throw new InvalidOperationException($"{name}: not the file's shape");
                }
            }, [model], Refusals);
        }

        foreach (var fuzz in Mutations.OfJson(System.Text.Encoding.UTF8.GetString(config), seed, 200)) Load($"config.json {fuzz.Label}", fuzz.Bytes, weights);
        foreach (var fuzz in Mutations.Of(config, seed + 1, 30)) Load($"config.json {fuzz.Label}", fuzz.Bytes, weights);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(weights, 0);
        foreach (var fuzz in Mutations.Of(weights, seed + 2, 80, [headerEnd - 40])) Load($"weights {fuzz.Label}", config, fuzz.Bytes);
        foreach (var fuzz in Mutations.OfSafetensors(Path.Combine(pristine, ModelDirectory.WeightsFileName), seed + 3, 40)) Load($"weights {fuzz.Label}", config, fuzz.Bytes);
        run.Finish();
    }

    [Fact]
    public void Damaged_import_configurations_import_or_are_refused_naming_the_file()
    {
        TorchBackend.EnsureLoaded();
        using var dir = new TemporaryDirectory();
        var run = new FuzzRun("import configurations", output);
        string model = TinyModels.Write(dir.Combine("m"), "vit");
        ModelExport.Run(new ModelExportRequest("timm", model, dir.Combine("hub")));
        using (var scope = NewDisposeScope())
        {
            Directory.CreateDirectory(dir.Combine("hf"));
            HuggingFaceNaming.Write(dir.Combine("hf", "model.safetensors"), HuggingFaceNaming.Vit(HuggingFaceNaming.Read(Path.Combine(model, ModelDirectory.WeightsFileName))));
        }
        var vit = TinyModels.Vit;
        string hfConfig = new JsonObject
        {
            ["architectures"] = new JsonArray("ViTForImageClassification"), ["model_type"] = "vit", ["hidden_size"] = vit.EmbedDim,
            ["num_hidden_layers"] = vit.Depth, ["num_attention_heads"] = vit.NumHeads, ["intermediate_size"] = (int)(vit.EmbedDim * vit.MlpRatio),
            ["hidden_act"] = "gelu", ["layer_norm_eps"] = 1e-6, ["image_size"] = vit.ImgSize, ["patch_size"] = vit.PatchSize, ["num_channels"] = 3,
            ["qkv_bias"] = true, ["id2label"] = new JsonObject { ["0"] = "a", ["1"] = "b", ["2"] = "c" },
        }.ToJsonString();

        var sources = new (string Name, string File, string Original, Func<ModelImportRequest> Request)[]
        {
            ("timm_config.json", dir.Combine("hub", "timm_config.json"), File.ReadAllText(dir.Combine("hub", "timm_config.json")),
                () => new ModelImportRequest("timm", dir.Combine("hub", "model.safetensors"), dir.Combine("out")) { Config = dir.Combine("hub", "timm_config.json") }),
            ("timm hub config.json", dir.Combine("hub", "config.json"), File.ReadAllText(dir.Combine("hub", "config.json")),
                () => new ModelImportRequest("timm", dir.Combine("hub"), dir.Combine("out"))),
            ("transformers config.json", dir.Combine("hf", "config.json"), hfConfig,
                () => new ModelImportRequest("hf-vit", dir.Combine("hf"), dir.Combine("out"))),
        };
        int seed = 5;
        foreach (var (name, file, original, request) in sources)
        {
            var cases = Mutations.OfJson(original, seed++, 150).Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(original), seed++, 20));
            foreach (var fuzz in cases)
            {
                File.WriteAllBytes(file, fuzz.Bytes);
                run.Case($"{name} {fuzz.Label}", () =>
                {
                    var result = ModelImport.Run(request());
                    ModelDirectory.Load(result.Directory).Model.Dispose();
                }, [Path.GetDirectoryName(file)!], Refusals);
            }
            File.WriteAllText(file, original);
        }

        // The weights beside those configurations: the hub's are checked against its config.json, the transformers
        // configuration is read off the tensors' names and shapes.
        foreach (var (name, weights, request) in new (string, string, Func<ModelImportRequest>)[]
                 {
                     ("timm hub model.safetensors", dir.Combine("hub", "model.safetensors"), sources[1].Request),
                     ("transformers model.safetensors", dir.Combine("hf", "model.safetensors"), sources[2].Request),
                 })
        {
            byte[] original = File.ReadAllBytes(weights);
            int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
            string pristine = dir.Combine("pristine.safetensors");
            File.WriteAllBytes(pristine, original);
            foreach (var fuzz in Mutations.Of(original, seed++, 40, [headerEnd - 40]).Concat(Mutations.OfSafetensors(pristine, seed++, 60)))
            {
                File.WriteAllBytes(weights, fuzz.Bytes);
                run.Case($"{name} {fuzz.Label}", () =>
                {
                    var result = ModelImport.Run(request());
                    ModelDirectory.Load(result.Directory).Model.Dispose();
                }, [Path.GetDirectoryName(weights)!], Refusals);
            }
            File.WriteAllBytes(weights, original);
        }
        run.Finish();
    }
}
