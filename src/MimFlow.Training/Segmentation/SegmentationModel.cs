using MimFlow.Models.Backbones;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// A ViT backbone and a <see cref="DecodeHead"/> (UperNet over four block outputs, or SETR-PUP over the final tokens).
/// Parameter names are <c>backbone.*</c> (the bare ViT's names, so <see cref="Optimization.ParameterGroups"/> finds its
/// blocks for layer decay) and <c>decode_head.*</c> (mmseg's name; grouped with the top layer, so it learns at the
/// full rate).
/// </summary>
public sealed class SegmentationModel : nn.Module<Tensor, Tensor>
{
    private readonly VisionTransformer backbone;
    private readonly DecodeHead decode_head;

    public SegmentationModel(VisionTransformer backbone, DecodeHead head) : base("Segmenter")
    {
        this.backbone = backbone;
        decode_head = head;
        RegisterComponents();
    }

    public VisionTransformer Backbone => backbone;

    public DecodeHead Head => decode_head;

    /// <summary>Logits [B, K, H, W] for pixels [B, 3, H, W] (H, W the backbone's input size).</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        return decode_head.forward(Levels(pixels), pixels.shape[2], pixels.shape[3]).MoveToOuterDisposeScope();
    }

    /// <summary>The logits and, for a head with one, the auxiliary head's logits (its loss is added in training).</summary>
    public (Tensor Logits, Tensor? Auxiliary) ForwardTraining(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var levels = Levels(pixels);
        var logits = decode_head.forward(levels, pixels.shape[2], pixels.shape[3]);
        var auxiliary = (decode_head as UperNetHead)?.Auxiliary(levels, pixels.shape[2], pixels.shape[3]);
        return (logits.MoveToOuterDisposeScope(), auxiliary?.MoveToOuterDisposeScope());
    }

    private Tensor[] Levels(Tensor pixels)
    {
        if (decode_head.Layers.Count == 0) return [backbone.ForwardFeatures(pixels)[.., 1..]];
        var hidden = backbone.ForwardLayers(pixels, null, decode_head.Layers.ToHashSet()).Hidden;
        return decode_head.Layers.Select(layer => hidden[layer][.., 1..]).ToArray();
    }
}
