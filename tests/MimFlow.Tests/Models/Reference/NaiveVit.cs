using System.Text.Json;

namespace MimFlow.Tests.Models.Reference;

/// <summary>The two timm model classes the reference reproduces.</summary>
public enum NaiveFamily { Beit, VisionTransformer }

public enum NaiveActivation { Gelu, QuickGelu }

/// <summary>One state-dict entry: its shape and its values (row-major), in float64.</summary>
public sealed record NaiveParameter(long[] Shape, double[] Values)
{
    public static NaiveParameter FromFloat32(long[] shape, float[] values) => new(shape, Array.ConvertAll(values, v => (double)v));
}

/// <summary>
/// timm's constructor arguments for <c>Beit</c> and <c>VisionTransformer</c> (timm 1.0), with timm's defaults, plus
/// BEiT pretraining's <c>mask_token</c>. Written from timm's source, independently of the model's own config types.
/// </summary>
public sealed record NaiveVitConfig
{
    public NaiveFamily Family { get; init; } = NaiveFamily.VisionTransformer;
    public int ImgSize { get; init; } = 224;
    public int PatchSize { get; init; } = 16;
    public int InChans { get; init; } = 3;
    public int EmbedDim { get; init; } = 768;
    public int Depth { get; init; } = 12;
    public int NumHeads { get; init; } = 12;
    public double MlpRatio { get; init; } = 4.0;
    public int NumClasses { get; init; } = 1000;
    public bool QkvBias { get; init; } = true;

    /// <summary>Beit: use_abs_pos_emb (timm default True); VisionTransformer: pos_embed 'learn' (true) or 'none'.</summary>
    public bool UseAbsPosEmb { get; init; } = true;

    /// <summary>Beit only: a relative position bias table in every block's attention.</summary>
    public bool UseRelPosBias { get; init; }

    /// <summary>Beit only: one relative position bias table (<c>rel_pos_bias.*</c>) added in every block.</summary>
    public bool UseSharedRelPosBias { get; init; }

    /// <summary>LayerScale when truthy (timm: <c>if init_values:</c>); Beit names it gamma_1/gamma_2, ViT ls1.gamma/ls2.gamma.</summary>
    public double? InitValues { get; init; }

    /// <summary>"avg" (mean of patch tokens then fc_norm; no final norm) or "token" (final norm, then [CLS]).</summary>
    public string GlobalPool { get; init; } = "token";

    /// <summary>VisionTransformer only: norm_pre after the embeddings and no patch-embedding bias (CLIP).</summary>
    public bool PreNorm { get; init; }

    /// <summary>VisionTransformer only (Beit passes no act_layer to its blocks): the MLP activation.</summary>
    public NaiveActivation Activation { get; init; } = NaiveActivation.Gelu;

    /// <summary>The LayerNorm eps of every norm (timm's default LayerNorm: 1e-6).</summary>
    public double LayerNormEps { get; init; } = 1e-6;

    /// <summary>BEiT pretraining's mask token (not in timm): masked patch embeddings become x·(1 − w) + mask_token·w.</summary>
    public bool UseMaskToken { get; init; }

    public int Grid => ImgSize / PatchSize;
    public int NumPatches => Grid * Grid;
    public int Tokens => NumPatches + 1;
    public int HeadDim => EmbedDim / NumHeads;
    public int MlpHidden => (int)Math.Floor(EmbedDim * MlpRatio);
    public bool HasLayerScale => InitValues is double v && v != 0;
    public bool AveragePool => GlobalPool == "avg";

    public void Validate()
    {
        if (ImgSize % PatchSize != 0) throw new ArgumentException($"img_size {ImgSize} is not a multiple of patch_size {PatchSize}");
        if (EmbedDim % NumHeads != 0) throw new ArgumentException($"embed_dim {EmbedDim} is not a multiple of num_heads {NumHeads}");
        if (GlobalPool is not ("avg" or "token")) throw new ArgumentException($"global_pool '{GlobalPool}': the reference does avg and token");
        if (Family == NaiveFamily.Beit && (PreNorm || Activation != NaiveActivation.Gelu))
            throw new ArgumentException("timm's Beit has neither pre_norm nor an act_layer argument");
        if (Family == NaiveFamily.VisionTransformer && (UseRelPosBias || UseSharedRelPosBias))
            throw new ArgumentException("timm's VisionTransformer has no relative position bias");
    }

    /// <summary>A timm_config.json (<c>{"timm_class": ..., "config": {...}}</c>) read with timm's constructor defaults.</summary>
    public static NaiveVitConfig FromTimmJson(string json)
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        var family = root.GetProperty("timm_class").GetString() switch
        {
            "Beit" => NaiveFamily.Beit,
            "VisionTransformer" => NaiveFamily.VisionTransformer,
            var other => throw new NotSupportedException($"timm_class '{other}'"),
        };
        var args = root.GetProperty("config");
        bool Has(string name) => args.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;
        int Int(string name, int fallback) => Has(name) ? args.GetProperty(name).GetInt32() : fallback;
        double Num(string name, double fallback) => Has(name) ? args.GetProperty(name).GetDouble() : fallback;
        bool Flag(string name, bool fallback) => Has(name) ? args.GetProperty(name).GetBoolean() : fallback;
        string Str(string name, string fallback) => Has(name) ? args.GetProperty(name).GetString() ?? fallback : fallback;
        bool beit = family == NaiveFamily.Beit;
        if (!Flag("class_token", true) || Flag("no_embed_class", false) || Int("reg_tokens", 0) != 0)
            throw new NotSupportedException("the reference needs a class token embedded with the patches");
        return new NaiveVitConfig
        {
            Family = family,
            ImgSize = Int("img_size", 224),
            PatchSize = Int("patch_size", 16),
            InChans = Int("in_chans", 3),
            EmbedDim = Int("embed_dim", 768),
            Depth = Int("depth", 12),
            NumHeads = Int("num_heads", 12),
            MlpRatio = Num("mlp_ratio", 4.0),
            NumClasses = Int("num_classes", 1000),
            QkvBias = Flag("qkv_bias", true),
            UseAbsPosEmb = beit ? Flag("use_abs_pos_emb", true) : Str("pos_embed", "learn") is not ("" or "none"),
            UseRelPosBias = beit && Flag("use_rel_pos_bias", false),
            UseSharedRelPosBias = beit && Flag("use_shared_rel_pos_bias", false),
            InitValues = Has("init_values") ? args.GetProperty("init_values").GetDouble() : null,
            GlobalPool = Str("global_pool", beit ? "avg" : "token"),
            PreNorm = !beit && Flag("pre_norm", false),
            Activation = Str("act_layer", "gelu") switch
            {
                "gelu" => NaiveActivation.Gelu,
                "quick_gelu" => NaiveActivation.QuickGelu,
                var other => throw new NotSupportedException($"act_layer '{other}'"),
            },
        };
    }
}

/// <summary>
/// A deliberately plain float64 forward of timm's <c>Beit</c> / <c>VisionTransformer</c> (forward_features and
/// forward_head, eval mode): double[] arrays and loops, no TorchSharp. Parameters are read by timm's state-dict
/// names; every read is recorded so a test can check that no parameter was ignored.
/// </summary>
public sealed class NaiveVit
{
    private readonly NaiveVitConfig c;
    private readonly IReadOnlyDictionary<string, NaiveParameter> state;
    private readonly HashSet<string> used = new(StringComparer.Ordinal);

    public NaiveVit(NaiveVitConfig config, IReadOnlyDictionary<string, NaiveParameter> state)
    {
        config.Validate();
        c = config;
        this.state = state;
    }

    /// <summary>State-dict entries no forward so far has read (sorted).</summary>
    public IReadOnlyList<string> UnusedParameters
    {
        get
        {
            lock (used) return state.Keys.Where(k => !used.Contains(k)).Order(StringComparer.Ordinal).ToList();
        }
    }

    /// <summary>forward_features: pixels [B, C, H, W] → [B, 1 + N, D]; mask [B, N] (1 = replace by mask_token) or null.</summary>
    public double[] ForwardFeatures(double[] pixels, int batch, double[]? mask = null)
    {
        int d = c.EmbedDim, n = c.NumPatches, t = c.Tokens;
        if (pixels.Length != batch * c.InChans * c.ImgSize * c.ImgSize) throw new ArgumentException("pixels do not match [B, C, H, W]");
        if (mask is not null && mask.Length != batch * n) throw new ArgumentException("mask does not match [B, N]");
        double[]? shared = c.UseSharedRelPosBias ? GatherRelativeBias(Param("rel_pos_bias.relative_position_bias_table", RelativeTableRows, c.NumHeads)) : null;
        var output = new double[batch * t * d];
        // Images are independent; they run in parallel only to keep the fixtures' 224-pixel forward quick.
        Parallel.For(0, batch, b =>
        {
            var x = Embed(pixels, b, mask is null ? null : mask.AsSpan(b * n, n).ToArray());
            if (c.PreNorm) x = LayerNorm(x, t, "norm_pre");
            for (int i = 0; i < c.Depth; i++) x = Block(x, i, shared);
            if (!c.AveragePool) x = LayerNorm(x, t, "norm");
            Array.Copy(x, 0, output, b * t * d, t * d);
        });
        return output;
    }

    /// <summary>forward_head: [B, 1 + N, D] → pooled (avg of patch tokens + fc_norm, or [CLS]) → head: [B, K] (K = D without a head).</summary>
    public double[] ForwardHead(double[] features, int batch)
    {
        int d = c.EmbedDim, t = c.Tokens;
        int k = c.NumClasses > 0 ? c.NumClasses : d;
        var output = new double[batch * k];
        for (int b = 0; b < batch; b++)
        {
            var pooled = new double[d];
            if (c.AveragePool)
            {
                for (int tok = 1; tok < t; tok++)
                for (int j = 0; j < d; j++) pooled[j] += features[(b * t + tok) * d + j];
                for (int j = 0; j < d; j++) pooled[j] /= t - 1;
                pooled = LayerNorm(pooled, 1, "fc_norm");
            }
            else
            {
                Array.Copy(features, b * t * d, pooled, 0, d);
            }
            var logits = c.NumClasses > 0 ? Linear(pooled, 1, d, c.NumClasses, "head", bias: true) : pooled;
            Array.Copy(logits, 0, output, b * k, k);
        }
        return output;
    }

    /// <summary>Patch embedding (P×P conv, stride P, row-major patches), mask token, [CLS] in front, absolute position embedding.</summary>
    private double[] Embed(double[] pixels, int b, double[]? mask)
    {
        int d = c.EmbedDim, p = c.PatchSize, g = c.Grid, ch = c.InChans, img = c.ImgSize;
        var weight = Param("patch_embed.proj.weight", d, ch, p, p);
        // timm's Beit PatchEmbed always has a bias; VisionTransformer drops it with pre_norm (bias=not pre_norm).
        bool patchBias = c.Family == NaiveFamily.Beit || !c.PreNorm;
        var bias = patchBias ? Param("patch_embed.proj.bias", d) : null;
        var x = new double[c.Tokens * d];
        for (int py = 0; py < g; py++)
        for (int px = 0; px < g; px++)
        {
            int token = 1 + py * g + px;
            // The patch's pixels in the conv weight's (c, ky, kx) order, so each output is one dot product.
            var patch = new double[ch * p * p];
            for (int ci = 0; ci < ch; ci++)
            for (int ky = 0; ky < p; ky++)
            for (int kx = 0; kx < p; kx++)
                patch[(ci * p + ky) * p + kx] = pixels[((b * ch + ci) * img + py * p + ky) * img + px * p + kx];
            for (int o = 0; o < d; o++)
                x[token * d + o] = (bias?[o] ?? 0.0) + Dot(weight, o * patch.Length, patch, 0, patch.Length);
        }
        if (c.UseMaskToken)
        {
            var maskToken = Param("mask_token", 1, 1, d);
            if (mask is not null)
                for (int patch = 0; patch < c.NumPatches; patch++)
                {
                    double w = mask[patch];
                    for (int j = 0; j < d; j++)
                        x[(1 + patch) * d + j] = x[(1 + patch) * d + j] * (1 - w) + maskToken[j] * w;
                }
        }
        else if (mask is not null)
        {
            throw new InvalidOperationException("a mask needs a config with a mask token");
        }
        var cls = Param("cls_token", 1, 1, d);
        Array.Copy(cls, 0, x, 0, d);
        if (c.UseAbsPosEmb)
        {
            var pos = Param("pos_embed", 1, c.Tokens, d);
            for (int i = 0; i < x.Length; i++) x[i] += pos[i];
        }
        return x;
    }

    /// <summary>x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).</summary>
    private double[] Block(double[] x, int index, double[]? sharedBias)
    {
        int d = c.EmbedDim, t = c.Tokens;
        string prefix = $"blocks.{index}.";
        var attended = Attention(LayerNorm(x, t, prefix + "norm1"), prefix + "attn.", sharedBias);
        Scale(attended, t, c.HasLayerScale ? Param(prefix + (c.Family == NaiveFamily.Beit ? "gamma_1" : "ls1.gamma"), d) : null);
        var y = new double[x.Length];
        for (int i = 0; i < y.Length; i++) y[i] = x[i] + attended[i];

        var normed = LayerNorm(y, t, prefix + "norm2");
        var hidden = Linear(normed, t, d, c.MlpHidden, prefix + "mlp.fc1", bias: true);
        for (int i = 0; i < hidden.Length; i++) hidden[i] = Activate(hidden[i]);
        var fed = Linear(hidden, t, c.MlpHidden, d, prefix + "mlp.fc2", bias: true);
        Scale(fed, t, c.HasLayerScale ? Param(prefix + (c.Family == NaiveFamily.Beit ? "gamma_2" : "ls2.gamma"), d) : null);
        for (int i = 0; i < y.Length; i++) y[i] += fed[i];
        return y;
    }

    /// <summary>
    /// Multi-head attention. qkv features are laid out [3, heads, head_dim]; Beit's bias is cat(q_bias, 0, v_bias),
    /// ViT's is qkv.bias. Logits q·k/√head_dim plus the block's and the shared relative position bias.
    /// </summary>
    private double[] Attention(double[] x, string prefix, double[]? sharedBias)
    {
        int d = c.EmbedDim, t = c.Tokens, heads = c.NumHeads, hd = c.HeadDim;
        var weight = Param(prefix + "qkv.weight", 3 * d, d);
        double[]? bias = null;
        if (c.QkvBias)
        {
            if (c.Family == NaiveFamily.Beit)
            {
                bias = new double[3 * d];
                Array.Copy(Param(prefix + "q_bias", d), 0, bias, 0, d);
                Array.Copy(Param(prefix + "v_bias", d), 0, bias, 2 * d, d);
            }
            else
            {
                bias = Param(prefix + "qkv.bias", 3 * d);
            }
        }
        var qkv = new double[t * 3 * d];
        for (int i = 0; i < t; i++)
        for (int o = 0; o < 3 * d; o++)
        {
            qkv[i * 3 * d + o] = (bias?[o] ?? 0.0) + Dot(weight, o * d, x, i * d, d);
        }
        double[]? ownBias = c.UseRelPosBias ? GatherRelativeBias(Param(prefix + "relative_position_bias_table", RelativeTableRows, heads)) : null;

        double scale = 1.0 / Math.Sqrt(hd);
        var merged = new double[t * d];
        var logits = new double[t];
        for (int h = 0; h < heads; h++)
        for (int i = 0; i < t; i++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < t; j++)
            {
                double logit = Dot(qkv, i * 3 * d + h * hd, qkv, j * 3 * d + d + h * hd, hd) * scale;
                if (ownBias is not null) logit += ownBias[(h * t + i) * t + j];
                if (sharedBias is not null) logit += sharedBias[(h * t + i) * t + j];
                logits[j] = logit;
                max = Math.Max(max, logit);
            }
            double total = 0;
            for (int j = 0; j < t; j++)
            {
                logits[j] = Math.Exp(logits[j] - max);
                total += logits[j];
            }
            for (int j = 0; j < t; j++)
            {
                double probability = logits[j] / total;
                int value = j * 3 * d + 2 * d + h * hd, target = i * d + h * hd;
                for (int e = 0; e < hd; e++) merged[target + e] += probability * qkv[value + e];
            }
        }
        return Linear(merged, t, d, d, prefix + "proj", bias: true);
    }

    private int RelativeTableRows => (2 * c.Grid - 1) * (2 * c.Grid - 1) + 3;

    /// <summary>
    /// The bias [heads, T, T] from a table [(2G − 1)² + 3, heads]: patch pairs by their (dy, dx) offset
    /// ((dy + G − 1)·(2G − 1) + dx + G − 1), then the extra rows: cls→patch (rows − 3), patch→cls (rows − 2), cls→cls (rows − 1).
    /// </summary>
    private double[] GatherRelativeBias(double[] table)
    {
        int g = c.Grid, t = c.Tokens, heads = c.NumHeads, rows = RelativeTableRows;
        var bias = new double[heads * t * t];
        for (int i = 0; i < t; i++)
        for (int j = 0; j < t; j++)
        {
            int row;
            if (i == 0 && j == 0) row = rows - 1;
            else if (j == 0) row = rows - 2;
            else if (i == 0) row = rows - 3;
            else
            {
                int yi = (i - 1) / g, xi = (i - 1) % g, yj = (j - 1) / g, xj = (j - 1) % g;
                row = (yi - yj + g - 1) * (2 * g - 1) + (xi - xj + g - 1);
            }
            for (int h = 0; h < heads; h++) bias[(h * t + i) * t + j] = table[row * heads + h];
        }
        return bias;
    }

    private double Activate(double v) => c.Activation == NaiveActivation.QuickGelu
        ? v / (1 + Math.Exp(-1.702 * v))
        : 0.5 * v * (1 + Erf(v / Math.Sqrt(2)));

    private static void Scale(double[] x, int rows, double[]? gamma)
    {
        if (gamma is null) return;
        int d = gamma.Length;
        for (int r = 0; r < rows; r++)
        for (int j = 0; j < d; j++) x[r * d + j] *= gamma[j];
    }

    /// <summary>y = x·Wᵀ + b for rows of x; W [out, in] as torch.nn.Linear stores it.</summary>
    private double[] Linear(double[] x, int rows, int inDim, int outDim, string prefix, bool bias)
    {
        var weight = Param(prefix + ".weight", outDim, inDim);
        var b = bias ? Param(prefix + ".bias", outDim) : null;
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
        for (int o = 0; o < outDim; o++)
        {
            y[r * outDim + o] = (b?[o] ?? 0.0) + Dot(weight, o * inDim, x, r * inDim, inDim);
        }
        return y;
    }

    /// <summary>Σₖ a[aStart + k]·b[bStart + k] for k &lt; length.</summary>
    private static double Dot(double[] a, int aStart, double[] b, int bStart, int length)
    {
        double sum = 0;
        for (int k = 0; k < length; k++) sum += a[aStart + k] * b[bStart + k];
        return sum;
    }

    /// <summary>LayerNorm over the last dimension: biased variance, eps inside the square root, then weight and bias.</summary>
    private double[] LayerNorm(double[] x, int rows, string prefix)
    {
        int d = c.EmbedDim;
        var weight = Param(prefix + ".weight", d);
        var bias = Param(prefix + ".bias", d);
        var y = new double[rows * d];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0, variance = 0;
            for (int j = 0; j < d; j++) mean += x[r * d + j];
            mean /= d;
            for (int j = 0; j < d; j++) variance += (x[r * d + j] - mean) * (x[r * d + j] - mean);
            variance /= d;
            double inv = 1.0 / Math.Sqrt(variance + c.LayerNormEps);
            for (int j = 0; j < d; j++) y[r * d + j] = (x[r * d + j] - mean) * inv * weight[j] + bias[j];
        }
        return y;
    }

    private double[] Param(string name, params long[] shape)
    {
        if (!state.TryGetValue(name, out var parameter))
            throw new KeyNotFoundException($"the reference needs '{name}' [{string.Join(", ", shape)}], which the state dict does not have");
        if (!parameter.Shape.SequenceEqual(shape))
            throw new InvalidDataException($"'{name}' is [{string.Join(", ", parameter.Shape)}]; the reference expects [{string.Join(", ", shape)}]");
        if (parameter.Values.Length != shape.Aggregate(1L, (a, v) => a * v))
            throw new InvalidDataException($"'{name}' has {parameter.Values.Length} values for shape [{string.Join(", ", shape)}]");
        lock (used) used.Add(name);
        return parameter.Values;
    }

    /// <summary>
    /// erf in float64: erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ x^(2n+1) / (2n+1)!! (all terms positive, so no cancellation);
    /// |erf(x)| rounds to 1 beyond |x| = 6.
    /// </summary>
    public static double Erf(double x)
    {
        double a = Math.Abs(x);
        if (a >= 6) return Math.Sign(x);
        double twoX2 = 2 * a * a, term = a, sum = a;
        for (int n = 1; n < 500 && term > 1e-18 * sum; n++)
        {
            term *= twoX2 / (2 * n + 1);
            sum += term;
        }
        double result = 2 / Math.Sqrt(Math.PI) * Math.Exp(-a * a) * sum;
        return x < 0 ? -result : result;
    }
}
