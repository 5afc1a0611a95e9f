using System.CommandLine;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Torch.Backend;
using Spectre.Console;

namespace MimFlow.Cli.Commands;

/// <summary><c>mimflow model import|export|forward</c>: weights between MimFlow and timm, and a forward pass.</summary>
internal static class ModelCommand
{
    public static Command Create(CliContext context)
    {
        return new Command("model", "Model directories (config.json + weights.safetensors with timm names): import, export, forward")
        {
            CreateInit(context),
            CreateImport(context),
            CreateExport(context),
            CreateForward(context),
        };
    }

    private static Command CreateInit(CliContext context)
    {
        var arch = new Option<string>("--arch") { Description = $"Architecture: {string.Join(", ", ModelCatalog.Names)}", Required = true };
        var output = new Option<string>("--out") { Description = "Model directory to write", Required = true };
        var seed = new Option<long?>("--seed") { Description = "Seed of the initialisation (default 0)" };
        var classes = new Option<int?>("--classes") { Description = "Classification head size for ViTs (default 0: none)" }.InRange(0, VitLimits.MaxClasses);
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
            var request = new ModelInitRequest(parsed.GetRequiredValue(arch), parsed.GetRequiredValue(output));
            request = request with
            {
                Seed = parsed.GetValue(seed) ?? request.Seed, Classes = parsed.GetValue(classes) ?? request.Classes, ImageSize = parsed.GetValue(imageSize),
                PatchSize = parsed.GetValue(patchSize), EmbedDim = parsed.GetValue(embedDim), Depth = parsed.GetValue(depth), NumHeads = parsed.GetValue(heads),
            };
            var result = ModelInit.Run(request);
            context.Report($"{result.Spec.Architecture}: {result.Parameters:N0} parameters, seed {request.Seed}");
            context.Console.MarkupLineInterpolated($"initialised {result.Spec.Architecture} ({result.Parameters:N0} parameters, seed {request.Seed}) in {result.Directory}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command CreateImport(CliContext context)
    {
        var options = new ModelImportOptions();
        var command = new Command("import", "Import a checkpoint (strict: every tensor is used or listed as left out, shapes must match)");
        options.AddTo(command);
        command.SetAction((parsed, _) =>
        {
            TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
            var request = options.Request(parsed);
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
        var options = new ModelForwardOptions();
        var command = new Command("forward", "Run a model on an input batch: a ViT's forward_features and forward_head (timm semantics), a tokenizer's codes. " +
                                             "A ViT given another image size runs with its positions resampled to that grid.");
        options.AddTo(command);
        command.SetAction((parsed, _) =>
        {
            var request = options.Request(parsed);
            if (ModelForward.OutputProblem(request) is string problem) throw new UsageException(problem);
            var result = ModelForward.Run(request with { Device = options.Device.Resolve(parsed) ?? request.Device });
            context.Console.MarkupLineInterpolated($"{result.Written} written to {request.Output}{(result.ResampledGrid is int g ? $" (positions resampled to {g}×{g})" : "")}");
            return Task.FromResult(0);
        });
        return command;
    }
}

/// <summary>The options of <c>mimflow model import</c>; only what the user typed is applied onto <see cref="ModelImportRequest"/>'s defaults.</summary>
internal sealed class ModelImportOptions
{
    public Option<string> From { get; } = CreateFrom();
    public Option<string?> Config { get; } = new("--config") { Description = "timm_config.json (timm with a weights file: timm_class Beit or VisionTransformer and its constructor arguments)" };

    public Option<string> Weights { get; } = new("--weights")
    {
        Description = "The checkpoint (format detected from its content), or a hub folder for timm and hf-* (config.json + model.safetensors)", Required = true,
    };

    public Option<string> Output { get; } = new("--out") { Description = "Model directory to write", Required = true };

    public Option<int?> Heads { get; } = new Option<int?>("--heads")
    {
        Description = "Attention heads, where the checkpoint does not tell (non-standard widths without relative position tables or config.json)",
    }.InRange(1, VitLimits.MaxEmbedDim);

    public Option<int?> ImageSize { get; } = new Option<int?>("--img-size")
    {
        Description = "Build the ViT for this input size, resampling position embeddings and relative position tables",
    }.InRange(1, VitLimits.MaxImageSize);

    public Option<string?> StateDictKey { get; } = new("--state-dict-key")
    {
        Description = "The entry of a wrapped checkpoint that holds the weights ('a/b' for nested entries); default: model, state_dict, module, teacher, or the only entry with tensors",
    };

    private static Option<string> CreateFrom()
    {
        var from = new Option<string>("--from") { Description = $"Naming scheme of the checkpoint: {string.Join(", ", ModelImportRequest.Schemes)} (see docs/model-interop.md)", Required = true };
        from.AcceptOnlyFromAmong([.. ModelImportRequest.Schemes]);
        return from;
    }

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { From, Config, Weights, Output, Heads, ImageSize, StateDictKey }) command.Options.Add(option);
    }

    public ModelImportRequest Request(ParseResult parsed)
    {
        var request = new ModelImportRequest(parsed.GetRequiredValue(From), parsed.GetRequiredValue(Weights), parsed.GetRequiredValue(Output));
        return request with
        {
            Config = parsed.GetValue(Config) ?? request.Config, Heads = parsed.GetValue(Heads) ?? request.Heads, ImageSize = parsed.GetValue(ImageSize) ?? request.ImageSize,
            StateDictKey = parsed.GetValue(StateDictKey) ?? request.StateDictKey,
        };
    }
}

/// <summary>The options of <c>mimflow model forward</c>; only what the user typed is applied onto <see cref="ModelForwardRequest"/>'s defaults.</summary>
internal sealed class ModelForwardOptions
{
    public Option<string> Model { get; } = new("--model") { Description = "Model directory", Required = true };
    public Option<string> Input { get; } = new("--input") { Description = "safetensors with pixel_values [B,3,H,W] (float; normalised for ViTs and VQ-KD, in [0,1] for the dVAE)", Required = true };
    public Option<string> Output { get; } = new("--output") { Description = "safetensors to write: ViT: features [B,1+N,D] and, with a head, logits; tokenizers: codes [B,N]", Required = true };
    public DeviceOption Device { get; } = new();

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Model, Input, Output, Device.Option }) command.Options.Add(option);
    }

    /// <summary>The request without its device, which <see cref="DeviceOption.Resolve"/> gives once the torch backend may load.</summary>
    public ModelForwardRequest Request(ParseResult parsed) =>
        new(parsed.GetRequiredValue(Model), parsed.GetRequiredValue(Input), parsed.GetRequiredValue(Output));
}
