using MimFlow.Core.Safetensors;
using MimFlow.Models.Backbones;
using MimFlow.Models.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Models.Interop;

/// <summary>What <c>mimflow model forward</c> runs: a model directory on a <c>pixel_values</c> batch, into a safetensors file.</summary>
public sealed record ModelForwardRequest(string Model, string Input, string Output)
{
    /// <summary>Where the model runs (null: the CPU).</summary>
    public Device? Device { get; init; }
}

/// <param name="Written">What the output holds, in words ("features [2, 197, 768] and logits").</param>
/// <param name="ResampledGrid">The patch grid positions were resampled to, when the input was not the model's size.</param>
public sealed record ModelForwardResult(string Written, int? ResampledGrid);

/// <summary>
/// A forward pass with timm's semantics: a ViT's forward_features and forward_head (at any square size divisible by the
/// patch, positions resampled), a tokenizer's codes.
/// </summary>
public static class ModelForward
{
    /// <summary>Why the output may not be written where asked (it would replace the input or a file of the model), or null.</summary>
    public static string? OutputProblem(ModelForwardRequest request)
    {
        if (OutputGuard.Same(request.Output, request.Input))
            return $"--output {request.Output} is the file given as --input: the forward pass would overwrite its input";
        if (OutputGuard.IsWithin(request.Output, ModelDirectory.Locate(request.Model)))
            return $"--output {request.Output} lies in the model directory --model {request.Model} reads: write it elsewhere";
        return null;
    }

    public static ModelForwardResult Run(ModelForwardRequest request)
    {
        if (OutputProblem(request) is string problem) throw new ArgumentException(problem);
        var device = request.Device ?? CPU;
        using var file = SafetensorsFile.Open(request.Input);
        if (!file.Contains("pixel_values")) throw new InvalidDataException($"{file.Path}: no tensor named pixel_values");
        long[] shape = file["pixel_values"].Shape;
        if (shape.Length != 4 || shape[0] < 1 || shape[1] < 1 || shape[2] is < 1 or > VitLimits.MaxImageSize || shape[3] is < 1 or > VitLimits.MaxImageSize)
            throw new InvalidDataException($"{file.Path}: pixel_values has shape [{string.Join(", ", shape)}], expected [B, 3, H, W] with sides in 1…{VitLimits.MaxImageSize}");
        var spec = ModelDirectory.ReadSpec(request.Model);
        int? resize = spec.Kind == ModelKind.Vit && (shape[2] != spec.Config!.ImgSize || shape[3] != spec.Config.ImgSize)
            ? (shape[2] == shape[3] ? (int)shape[2] : throw new InvalidDataException($"{file.Path}: a {shape[2]}×{shape[3]} input: ViTs here take square inputs"))
            : null;
        var writer = new SafetensorsWriter();
        string written;
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
        {
            var pixels = WeightLoader.Read(file, "pixel_values").to(device);
            if (spec.Kind == ModelKind.Vit)
            {
                var (_, network) = ModelDirectory.LoadVit(request.Model, resize);
                using (network)
                {
                    network.eval();
                    network.to(device);
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
                var (_, network) = ModelDirectory.Load(request.Model);
                using (network)
                {
                    network.eval();
                    network.to(device);
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
        }
        writer.Write(request.Output);
        return new ModelForwardResult(written, resize is int r ? r / spec.Config!.PatchSize : null);
    }

    private static void AddFloat32(SafetensorsWriter writer, string name, Tensor values)
    {
        using var cpu = values.to(float32).cpu().contiguous();
        writer.AddFloat32(name, cpu.shape, cpu.data<float>().ToArray());
    }
}
