using MimFlow.Models.Backbones;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Training.Segmentation;

/// <summary>
/// A ViT backbone and a <see cref="SegmentationHead"/> on its final patch tokens. Parameter names are
/// <c>backbone.*</c> (the bare ViT's names, so <see cref="Optimization.ParameterGroups"/> finds its blocks for layer
/// decay) and <c>decode_head.*</c> (mmseg's name; grouped with the top layer, so it learns at the full rate).
/// </summary>
public sealed class SegmentationModel : nn.Module<Tensor, Tensor>
{
    private readonly VisionTransformer backbone;
    private readonly SegmentationHead decode_head;

    public SegmentationModel(VisionTransformer backbone, SegmentationHead head) : base("Segmenter")
    {
        this.backbone = backbone;
        decode_head = head;
        RegisterComponents();
    }

    public VisionTransformer Backbone => backbone;

    public SegmentationHead Head => decode_head;

    /// <summary>Logits [B, K, H, W] for pixels [B, 3, H, W] (H, W the backbone's input size).</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var tokens = backbone.ForwardFeatures(pixels);
        return decode_head.forward(tokens[.., 1..], pixels.shape[2], pixels.shape[3]).MoveToOuterDisposeScope();
    }
}
