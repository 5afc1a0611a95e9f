using MimFlow.Data.Sources;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Models.Tokenizers;
using MimFlow.Shards;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Data;
using MimFlow.Torch.Backend;

namespace MimFlow.Tests.Precompute;

/// <summary>A small generated ImageNet-layout set with one broken file, and tiny VQ-KD and ViT teacher directories (32 px).</summary>
internal sealed class TokenizeFixture : IDisposable
{
    private readonly TemporaryDirectory directory = new();

    private TokenizeFixture() { }

    public string Data => directory.Combine("data");
    public string Tokenizer => directory.Combine("vqkd");
    public string Teacher => directory.Combine("teacher");
    public SampleIndex Index { get; private set; } = null!;

    public string Combine(params string[] parts) => directory.Combine(parts);

    public static async Task<TokenizeFixture> CreateAsync(int images = 10)
    {
        TorchBackend.EnsureLoaded();
        var fixture = new TokenizeFixture();
        await TestImages.TrainingSet(fixture.Data, images, classes: 2, minSide: 40, maxSide: 90);
        string broken = Directory.EnumerateDirectories(Path.Combine(fixture.Data, "train")).Order(StringComparer.Ordinal).First();
        File.WriteAllBytes(Path.Combine(broken, "zz_broken.JPEG"), [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]);
        fixture.Index = DatasetSource.Open(fixture.Data, DatasetLayout.ImageNet);

        var vqkd = VqKdConfig.ForEncoder(new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 32, Depth = 1, NumHeads = 2 })
            with { Codes = 64, CodeDim = 8, DecoderDepth = 1, TeacherDim = 16 };
        using (var tokenizer = ModelCatalog.Create(new ModelSpec("vqkd-test", Vqkd: vqkd), seed: 1))
            ModelDirectory.Save(fixture.Tokenizer, new ModelSpec("vqkd-test", Vqkd: vqkd), tokenizer);
        var teacher = new VitConfig { ImgSize = 32, PatchSize = 8, EmbedDim = 24, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("vit-test", Config: teacher), seed: 2))
            ModelDirectory.Save(fixture.Teacher, new ModelSpec("vit-test", Config: teacher), model);
        return fixture;
    }

    public TokenizeRequest Request(string output, int views = 2) => new()
    {
        DataRoot = Data, TokenizerDirectory = Tokenizer, TeacherDirectory = Teacher, Views = views, Seed = 7, OutputDirectory = output,
        StoreImageMaxSide = 48, FeatureEncoding = FeatureEncoding.Int8, BatchSize = 4, DecodeWorkers = 2, TargetShardBytes = 12_000, RowGroupRows = 4,
    };

    public void Dispose() => directory.Dispose();
}
