using System.CommandLine;
using MimFlow.Core.IO;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow model import|export|forward</c>: weights between MimFlow and timm, and a forward pass.</summary>
internal static class ModelCommand
{
    public static Command Create(CliContext context)
    {
        var model = new Command("model", "Model directories (config.json + weights.safetensors with timm names): import, export, forward");
        model.Subcommands.Add(CreateInit(context));
        model.Subcommands.Add(CreateImport(context));
        model.Subcommands.Add(CreateExport(context));
        model.Subcommands.Add(CreateForward(context));
        return model;
    }

    private static Command CreateInit(CliContext context)
    {
        var arch = new Option<string>("--arch") { Description = $"Architecture: {string.Join(", ", Architectures.Names)}", Required = true };
        var output = new Option<string>("--out") { Description = "Model directory to write", Required = true };
        var seed = new Option<long>("--seed") { Description = "Seed of the initialisation", DefaultValueFactory = _ => 0 };
        var classes = new Option<int>("--classes") { Description = "Classification head size (0: none)", DefaultValueFactory = _ => 0 };
        var command = new Command("init", "Write a randomly initialised model directory (BEiT's initialisation, seeded)");
        foreach (var option in new Option[] { arch, output, seed, classes }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            string name = parsed.GetRequiredValue(arch);
            using var network = new VisionTransformer(Architectures.Get(name, parsed.GetValue(classes)));
            Initialization.Apply(network, parsed.GetValue(seed));
            string directory = parsed.GetRequiredValue(output);
            ModelDirectory.Save(directory, name, network);
            context.Console.MarkupLineInterpolated($"initialised {name} ({Parameters(network):N0} parameters, seed {parsed.GetValue(seed)}) in {directory}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateImport(CliContext context)
    {
        var from = new Option<string>("--from") { Description = "Source format: timm", Required = true };
        from.AcceptOnlyFromAmong("timm");
        var config = new Option<string>("--config") { Description = "timm_config.json (timm_class Beit or VisionTransformer and its constructor arguments)", Required = true };
        var weights = new Option<string>("--weights") { Description = "weights.safetensors with timm parameter names", Required = true };
        var output = new Option<string>("--out") { Description = "Model directory to write", Required = true };
        var command = new Command("import", "Import a timm Beit / VisionTransformer (strict: every parameter name and shape must match)");
        foreach (var option in new Option[] { from, config, weights, output }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            string configPath = parsed.GetRequiredValue(config);
            var vit = TimmConfig.Parse(File.ReadAllText(configPath), configPath);
            using var network = new VisionTransformer(vit);
            using (var file = SafetensorsFile.Open(parsed.GetRequiredValue(weights)))
                WeightLoader.LoadStrict(network, file);
            string directory = parsed.GetRequiredValue(output);
            ModelDirectory.Save(directory, vit.BeitAttention ? "beit" : "vit", network);
            context.Console.MarkupLineInterpolated($"imported {network.state_dict().Count} tensors ({Parameters(network):N0} parameters) into {directory}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateExport(CliContext context)
    {
        var to = new Option<string>("--to") { Description = "Target format: timm", Required = true };
        to.AcceptOnlyFromAmong("timm");
        var modelDir = new Option<string>("--model") { Description = "Model directory", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for weights.safetensors and timm_config.json", Required = true };
        var command = new Command("export", "Export a model directory for timm (load with strict=True)");
        foreach (var option in new Option[] { to, modelDir, output }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var (stored, network) = ModelDirectory.Load(parsed.GetRequiredValue(modelDir));
            using (network)
            {
                string directory = parsed.GetRequiredValue(output);
                Directory.CreateDirectory(directory);
                ModelDirectory.WriteWeights(Path.Combine(directory, "weights.safetensors"), network, ModelDirectory.NotInTimm);
                AtomicFile.WriteAllText(Path.Combine(directory, "timm_config.json"), ModelDirectory.TimmConfigJson(stored.Config));
                context.Console.MarkupLineInterpolated($"exported {stored.Architecture} to {directory} (weights.safetensors, timm_config.json)");
            }
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateForward(CliContext context)
    {
        var modelDir = new Option<string>("--model") { Description = "Model directory", Required = true };
        var input = new Option<string>("--input") { Description = "safetensors with pixel_values [B,3,H,W] (float)", Required = true };
        var output = new Option<string>("--output") { Description = "safetensors to write: features [B,1+N,D] and, with a head, logits", Required = true };
        var command = new Command("forward", "Run forward_features and forward_head (timm semantics) on an input batch");
        foreach (var option in new Option[] { modelDir, input, output }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var (stored, network) = ModelDirectory.Load(parsed.GetRequiredValue(modelDir));
            using (network)
            using (var scope = NewDisposeScope())
            using (var noGrad = no_grad())
            {
                network.eval();
                network.to(backend.DefaultDevice);
                using var file = SafetensorsFile.Open(parsed.GetRequiredValue(input));
                if (!file.Contains("pixel_values")) throw new InvalidDataException($"{file.Path}: no tensor named pixel_values");
                var pixels = WeightLoader.Read(file, "pixel_values").to(backend.DefaultDevice);
                var features = network.ForwardFeatures(pixels).cpu().contiguous();
                var writer = new SafetensorsWriter();
                writer.AddFloat32("features", features.shape, features.data<float>().ToArray());
                if (stored.Config.NumClasses > 0)
                {
                    var logits = network.ForwardHead(features.to(backend.DefaultDevice)).cpu().contiguous();
                    writer.AddFloat32("logits", logits.shape, logits.data<float>().ToArray());
                }
                string path = parsed.GetRequiredValue(output);
                writer.Write(path);
                context.Console.MarkupLineInterpolated($"features [[{string.Join(", ", features.shape)}]]{(stored.Config.NumClasses > 0 ? " and logits" : "")} written to {path}");
            }
            return Task.FromResult(0);
        });
        return command;
    }

    private static long Parameters(nn.Module module) => module.parameters().Sum(p => p.numel());
}
