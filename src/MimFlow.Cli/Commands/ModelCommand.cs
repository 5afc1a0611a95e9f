using System.CommandLine;
using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
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
        var arch = new Option<string>("--arch") { Description = $"Architecture: {string.Join(", ", ModelCatalog.Names)}", Required = true };
        var output = new Option<string>("--out") { Description = "Model directory to write", Required = true };
        var seed = new Option<long>("--seed") { Description = "Seed of the initialisation", DefaultValueFactory = _ => 0 };
        var classes = new Option<int>("--classes") { Description = "Classification head size for ViTs (0: none)", DefaultValueFactory = _ => 0 }.InRange(0, VitLimits.MaxClasses);
        // A smaller or larger shape of the same architecture (the demo's 64 px models, quick experiments).
        var imageSize = new Option<int?>("--img-size") { Description = "Override the input size (ViT, or a VQ-KD's encoder)" }.InRange(1, VitLimits.MaxImageSize);
        var patchSize = new Option<int?>("--patch-size") { Description = "Override the patch size" }.InRange(1, VitLimits.MaxImageSize);
        var embedDim = new Option<int?>("--embed-dim") { Description = "Override the width" }.InRange(1, VitLimits.MaxEmbedDim);
        var depth = new Option<int?>("--depth") { Description = "Override the number of blocks" }.InRange(1, VitLimits.MaxDepth);
        var heads = new Option<int?>("--num-heads") { Description = "Override the attention heads" }.InRange(1, VitLimits.MaxEmbedDim);
        var command = new Command("init", "Write a randomly initialised model directory (the reference initialisation, seeded)");
        foreach (var option in new Option[] { arch, output, seed, classes, imageSize, patchSize, embedDim, depth, heads }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var spec = ModelCatalog.Spec(parsed.GetRequiredValue(arch), parsed.GetValue(classes));
            VitConfig Reshape(VitConfig config) => config with
            {
                ImgSize = parsed.GetValue(imageSize) ?? config.ImgSize, PatchSize = parsed.GetValue(patchSize) ?? config.PatchSize,
                EmbedDim = parsed.GetValue(embedDim) ?? config.EmbedDim, Depth = parsed.GetValue(depth) ?? config.Depth, NumHeads = parsed.GetValue(heads) ?? config.NumHeads,
            };
            bool reshaped = new[] { imageSize, patchSize, embedDim, depth, heads }.Any(o => parsed.GetValue(o) is not null);
            if (reshaped)
                spec = spec.Kind switch
                {
                    ModelKind.Vit => spec with { Config = Reshape(spec.Config!) },
                    ModelKind.Vqkd => spec with { Vqkd = spec.Vqkd! with { Encoder = Reshape(spec.Vqkd!.Encoder) } },
                    _ => throw new ArgumentException($"{spec.Architecture}: the shape options apply to ViTs and VQ-KD encoders only"),
                };
            (spec.Config ?? spec.Vqkd?.Encoder)?.Validate();
            using var network = ModelCatalog.Create(spec, parsed.GetValue(seed));
            string directory = parsed.GetRequiredValue(output);
            ModelDirectory.Save(directory, spec, network);
            context.Report($"{spec.Architecture}: {Parameters(network):N0} parameters, seed {parsed.GetValue(seed)}");
            context.Console.MarkupLineInterpolated($"initialised {spec.Architecture} ({Parameters(network):N0} parameters, seed {parsed.GetValue(seed)}) in {directory}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateImport(CliContext context)
    {
        var from = new Option<string>("--from") { Description = $"Naming scheme of the checkpoint: {string.Join(", ", ModelImportRequest.Schemes)} (see docs/model-interop.md)", Required = true };
        from.AcceptOnlyFromAmong([.. ModelImportRequest.Schemes]);
        var config = new Option<string?>("--config") { Description = "timm_config.json (timm with a weights file: timm_class Beit or VisionTransformer and its constructor arguments)" };
        var weights = new Option<string>("--weights")
        {
            Description = "The checkpoint (format detected from its content), or a hub folder for timm and hf-* (config.json + model.safetensors)", Required = true,
        };
        var output = new Option<string>("--out") { Description = "Model directory to write", Required = true };
        var heads = new Option<int?>("--heads") { Description = "Attention heads, where the checkpoint does not tell (non-standard widths without relative position tables or config.json)" }
            .InRange(1, VitLimits.MaxEmbedDim);
        var imageSize = new Option<int?>("--img-size") { Description = "Build the ViT for this input size, resampling position embeddings and relative position tables" }
            .InRange(1, VitLimits.MaxImageSize);
        var stateDictKey = new Option<string?>("--state-dict-key")
        {
            Description = "The entry of a wrapped checkpoint that holds the weights ('a/b' for nested entries); default: model, state_dict, module, teacher, or the only entry with tensors",
        };
        var command = new Command("import", "Import a checkpoint (strict: every tensor is used or listed as left out, shapes must match)");
        foreach (var option in new Option[] { from, config, weights, output, heads, imageSize, stateDictKey }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var request = new ModelImportRequest(parsed.GetRequiredValue(from), parsed.GetRequiredValue(weights), parsed.GetRequiredValue(output))
            {
                Config = parsed.GetValue(config), Heads = parsed.GetValue(heads), ImageSize = parsed.GetValue(imageSize), StateDictKey = parsed.GetValue(stateDictKey),
            };
            if (ModelImport.OutputProblem(request) is string problem) throw new UsageException($"--out {request.OutputDirectory} {problem} (--weights {request.Weights})");
            var result = ModelImport.Run(request);
            string source = result.SourceArchitecture is string name ? $"{name} ({result.Format})" : result.Format;
            context.Console.MarkupLineInterpolated($"imported {result.Tensors} tensors ({result.Parameters:N0} parameters) from {source} as {result.Spec.Architecture} into {result.Directory}");
            if (result.Labels is { } labels)
                context.Console.MarkupLineInterpolated($"{labels.Count} label names in {ModelDirectory.LabelsFileName}");
            if (result.LeftOut.Count > 0)
                context.Console.MarkupLineInterpolated($"left out {result.LeftOut.Count} entries that are not part of the model: {string.Join(", ", result.LeftOut.Take(6))}{(result.LeftOut.Count > 6 ? ", …" : "")}");
            foreach (string note in result.Notes) context.Console.MarkupLineInterpolated($"note: {note}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateExport(CliContext context)
    {
        var to = new Option<string>("--to") { Description = $"Target layout: {string.Join(", ", ModelExportRequest.Targets)}", Required = true };
        to.AcceptOnlyFromAmong([.. ModelExportRequest.Targets]);
        var modelDir = new Option<string>("--model") { Description = "Model directory (a ViT)", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for timm's hub layout: config.json, model.safetensors (and timm_config.json)", Required = true };
        var command = new Command("export", "Export a model directory as a timm hub folder (timm.create_model('local-dir:OUT', pretrained=True) loads it strictly)");
        foreach (var option in new Option[] { to, modelDir, output }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            var request = new ModelExportRequest(parsed.GetRequiredValue(to), parsed.GetRequiredValue(modelDir), parsed.GetRequiredValue(output));
            if (ModelExport.OutputProblem(request) is string problem) throw new UsageException($"--out {request.OutputDirectory} {problem} (--model {request.Model})");
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var result = ModelExport.Run(request);
            string args = result.ModelArgs.Count == 0 ? "" : $" with model_args {string.Join(", ", result.ModelArgs.Select(a => $"{a.Key}={TimmConfig.Show(a.Value)}"))}";
            context.Console.MarkupLineInterpolated($"exported {result.Spec.Architecture} as {result.Architecture}{args} to {result.Directory} ({string.Join(", ", result.Files)})");
            foreach (string note in result.Notes) context.Console.MarkupLineInterpolated($"note: {note}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateForward(CliContext context)
    {
        var modelDir = new Option<string>("--model") { Description = "Model directory", Required = true };
        var input = new Option<string>("--input") { Description = "safetensors with pixel_values [B,3,H,W] (float; normalised for ViTs and VQ-KD, in [0,1] for the dVAE)", Required = true };
        var output = new Option<string>("--output") { Description = "safetensors to write: ViT: features [B,1+N,D] and, with a head, logits; tokenizers: codes [B,N]", Required = true };
        var command = new Command("forward", "Run a model on an input batch: a ViT's forward_features and forward_head (timm semantics), a tokenizer's codes. " +
                                             "A ViT given another image size runs with its positions resampled to that grid.");
        foreach (var option in new Option[] { modelDir, input, output }) command.Options.Add(option);
        command.SetAction((parsed, _) =>
        {
            string path = parsed.GetRequiredValue(output), directory = parsed.GetRequiredValue(modelDir);
            // The output replaces its file when written: it must be neither the input batch nor any file of the model.
            if (OutputGuard.Same(path, parsed.GetRequiredValue(input)))
                throw new UsageException($"--output {path} is the file given as --input: the forward pass would overwrite its input");
            if (OutputGuard.IsWithin(path, ModelDirectory.Locate(directory)))
                throw new UsageException($"--output {path} lies in the model directory --model {directory} reads: write it elsewhere");
            var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            using var file = SafetensorsFile.Open(parsed.GetRequiredValue(input));
            if (!file.Contains("pixel_values")) throw new InvalidDataException($"{file.Path}: no tensor named pixel_values");
            long[] shape = file["pixel_values"].Shape;
            if (shape.Length != 4 || shape[0] < 1 || shape[1] < 1 || shape[2] is < 1 or > VitLimits.MaxImageSize || shape[3] is < 1 or > VitLimits.MaxImageSize)
                throw new InvalidDataException($"{file.Path}: pixel_values has shape [{string.Join(", ", shape)}], expected [B, 3, H, W] with sides in 1…{VitLimits.MaxImageSize}");
            var spec = ModelDirectory.ReadSpec(directory);
            int? resize = spec.Kind == ModelKind.Vit && (shape[2] != spec.Config!.ImgSize || shape[3] != spec.Config.ImgSize)
                ? (shape[2] == shape[3] ? (int)shape[2] : throw new InvalidDataException($"{file.Path}: a {shape[2]}×{shape[3]} input: ViTs here take square inputs"))
                : null;
            var writer = new SafetensorsWriter();
            using (var scope = NewDisposeScope())
            using (var noGrad = no_grad())
            {
                var pixels = WeightLoader.Read(file, "pixel_values").to(backend.DefaultDevice);
                string written;
                if (spec.Kind == ModelKind.Vit)
                {
                    var (_, network) = ModelDirectory.LoadVit(directory, resize);
                    using (network)
                    {
                        network.eval();
                        network.to(backend.DefaultDevice);
                        var features = network.ForwardFeatures(pixels);
                        AddFloat32(writer, "features", features);
                        written = $"features [{string.Join(", ", features.shape)}]";
                        if (network.Config.NumClasses > 0)
                        {
                            AddFloat32(writer, "logits", network.ForwardHead(features));
                            written += " and logits";
                        }
                    }
                }
                else
                {
                    var (_, network) = ModelDirectory.Load(directory);
                    using (network)
                    {
                        network.eval();
                        network.to(backend.DefaultDevice);
                        var codes = (network switch
                        {
                            VqKd vqkd => vqkd.Tokenize(pixels),
                            DalleEncoder dvae => dvae.Tokenize(pixels),
                            _ => throw new InvalidOperationException($"{spec.Architecture}: no forward for this kind"),
                        }).cpu().contiguous();
                        writer.Add<long>("codes", SafetensorsDType.I64, codes.shape, codes.data<long>().ToArray());
                        written = $"codes [{string.Join(", ", codes.shape)}]";
                    }
                }
                writer.Write(path);
                context.Console.MarkupLineInterpolated($"{written} written to {path}{(resize is int r ? $" (positions resampled to {r / spec.Config!.PatchSize}×{r / spec.Config.PatchSize})" : "")}");
            }
            return Task.FromResult(0);
        });
        return command;
    }

    private static void AddFloat32(SafetensorsWriter writer, string name, Tensor values)
    {
        using var cpu = values.to(float32).cpu().contiguous();
        writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
    }

    private static long Parameters(nn.Module module) => module.parameters().Sum(p => p.numel());
}
