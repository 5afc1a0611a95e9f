using System.Text.Json.Nodes;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Torch.Backend;

namespace MimFlow.Tests.Models;

/// <summary>Model directories small enough to write, damage and load hundreds of times in a test.</summary>
internal static class TinyModels
{
    public static VitConfig Vit => new() { ImgSize = 16, PatchSize = 8, EmbedDim = 16, Depth = 2, NumHeads = 2, NumClasses = 3 };

    /// <summary>BEiT's shape: q/v biases, a relative position table per block, LayerScale, a mask token, mean pooling.</summary>
    public static VitConfig Beit => Vit with
    {
        BeitAttention = true, UseAbsPosEmb = false, UseRelPosBias = true, InitValues = 0.1, GlobalPool = "avg", UseMaskToken = true,
    };

    public static VqKdConfig Vqkd => VqKdConfig.ForEncoder(Vit) with { Codes = 16, CodeDim = 4, DecoderDepth = 1, TeacherDim = 8 };

    public static DalleEncoderConfig Dvae => new(GroupCount: 2, HiddenSize: 8, BlocksPerGroup: 1, InputChannels: 3, VocabSize: 16);

    public static ModelSpec Spec(string kind) => kind switch
    {
        "vit" => new ModelSpec("vit-test", Config: Vit),
        "beit" => new ModelSpec("beit-test", Config: Beit),
        "vqkd" => new ModelSpec("vqkd-test", Vqkd: Vqkd),
        "dvae" => new ModelSpec("dvae", Dvae: Dvae),
        _ => throw new ArgumentException(kind),
    };

    /// <summary>Writes a seeded model directory of <paramref name="kind"/> (vit, beit, vqkd, dvae) and returns its path.</summary>
    public static string Write(string directory, string kind, long seed = 1)
    {
        TorchBackend.EnsureLoaded();
        var spec = Spec(kind);
        using var model = ModelCatalog.Create(spec, seed);
        ModelDirectory.Save(directory, spec, model);
        return directory;
    }

    /// <summary>Rewrites one value of a JSON file; <paramref name="path"/> is dotted (<c>config.depth</c>); null removes it.</summary>
    public static void Edit(string file, string path, JsonNode? value, bool remove = false)
    {
        var root = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
        string[] parts = path.Split('.');
        var parent = root;
        foreach (string part in parts[..^1]) parent = parent[part]!.AsObject();
        if (remove) parent.Remove(parts[^1]);
        else parent[parts[^1]] = value;
        File.WriteAllText(file, root.ToJsonString());
    }
}
