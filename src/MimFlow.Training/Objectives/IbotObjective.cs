using MimFlow.Models.Backbones;
using MimFlow.Training.Distributed;
using MimFlow.Models.Heads;
using MimFlow.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace MimFlow.Training.Objectives;

/// <summary>
/// iBOT's sizes and loss constants, as bytedance/ibot main_ibot.py defines them (<c>iBOTLoss</c>, <c>iBOTHead</c>).
/// The head is shared between [CLS] and patch tokens, as the published runs set it (<c>--shared_head true</c> in the
/// README's commands; the teacher's <c>--shared_head_teacher</c> defaults to true), so one projection space and one
/// output dimension serve both losses.
/// </summary>
public sealed record IbotOptions
{
    public int OutDim { get; init; } = 8192;
    public int HeadHidden { get; init; } = 2048;
    public int HeadBottleneck { get; init; } = 256;

    /// <summary>DINO's norm_last_layer: the prototypes' gain fixed at 1 (argparse default; the ViT-S/B runs pass false).</summary>
    public bool NormLastLayer { get; init; } = true;

    public double StudentTemperature { get; init; } = 0.1;

    /// <summary>Epochs during which the prototypes take no step (<c>freeze_last_layer</c>).</summary>
    public int FreezeLastLayerEpochs { get; init; } = 1;

    /// <summary>EMA momentum of the [CLS] center (<c>center_momentum</c>).</summary>
    public double CenterMomentum { get; init; } = 0.9;

    /// <summary>EMA momentum of the patch center (<c>center_momentum2</c>).</summary>
    public double PatchCenterMomentum { get; init; } = 0.9;

    /// <summary>λ1, the weight of the [CLS] self-distillation.</summary>
    public double ClsWeight { get; init; } = 1.0;

    /// <summary>λ2, the weight of the masked patch self-distillation.</summary>
    public double PatchWeight { get; init; } = 1.0;
}

/// <summary>The teacher's sharpening temperatures for one step.</summary>
public readonly record struct TeacherTemperatures(double Cls, double Patch)
{
    /// <summary>iBOT's default schedules (0.04 → 0.07 over 30 epochs for both) at <paramref name="epoch"/>.</summary>
    public static TeacherTemperatures Ibot(double epoch) =>
        new(TeacherTemperatureSchedule.Ibot.At(epoch), TeacherTemperatureSchedule.Ibot.At(epoch));
}

/// <summary>
/// iBOT's teacher temperature schedule: <paramref name="Warmup"/> held until <paramref name="StartEpoch"/>
/// (<c>--pred_start_epoch</c>, patch schedule only), then numpy's linspace(Warmup, Final, WarmupEpochs) indexed by
/// the epoch, then <paramref name="Final"/>. A fractional epoch (a step-wise caller) interpolates along the same line.
/// </summary>
public sealed record TeacherTemperatureSchedule(double Warmup, double Final, int WarmupEpochs, int StartEpoch = 0)
{
    /// <summary>The README's runs: <c>--teacher_temp 0.07</c>, and the patch defaults 0.04 → 0.07, over 30 warm-up epochs.</summary>
    public static TeacherTemperatureSchedule Ibot { get; } = new(0.04, 0.07, 30);

    public double At(double epoch)
    {
        double since = epoch - StartEpoch;
        if (since < 0) return Warmup;
        if (since >= WarmupEpochs) return Final;
        return WarmupEpochs == 1 ? Warmup : Warmup + (Final - Warmup) * since / (WarmupEpochs - 1);
    }
}

/// <summary>
/// iBOT: self-distillation with an online tokenizer. The student (backbone + DINO head) sees the masked global crops
/// and the unmasked local crops; the teacher, an EMA copy of backbone and head, sees the unmasked global crops only.
/// [CLS] loss: the teacher's centred and sharpened [CLS] distribution of each global view q against the student's
/// [CLS] log-softmax (temperature 0.1) of every other view v ≠ q, globals and locals (cross-view pairs only). Patch
/// loss: for the same global view, the teacher's centred, sharpened patch distributions against the student's at the
/// masked patches, averaged per image over its masked patches (an image without any counts as 0, as iBOT's clamp
/// gives) and then over the batch. Each loss is averaged over its pairs and weighted by λ1 and λ2 (1 and 1).
/// </summary>
/// <remarks>
/// The centers are EMAs (momentum 0.9) of the teacher's raw outputs over the whole global batch ([CLS]) and over all
/// patches of it (patch), updated after the loss has used the old ones, only in training mode so an evaluation
/// pass leaves them alone. Single process: iBOT all-reduces the center statistics across GPUs. Local crops may be
/// smaller than the globals (96 vs 224 px): the backbone then interpolates its absolute position embeddings as DINO
/// does, which needs a backbone without relative position biases.
/// </remarks>
public sealed class IbotObjective : nn.Module, IMultiCropObjective
{
    [ComponentName(Name = "backbone")] private readonly VisionTransformer backbone;
    [ComponentName(Name = "head")] private readonly DinoHead head;
    [ComponentName(Name = "teacher")] private readonly EmaTeacher teacher;
    [ComponentName(Name = "center")] private readonly Tensor center;
    [ComponentName(Name = "center2")] private readonly Tensor patchCenter;
    private readonly IbotOptions options;
    private ICollective collective = SingleProcess.Instance;

    public IbotObjective(VisionTransformer backbone, IbotOptions? options = null) : base("IbotObjective")
    {
        this.options = options ?? new IbotOptions();
        var config = backbone.Config;
        if (!config.UseMaskToken) throw new ArgumentException("iBOT needs a backbone with a mask token (config UseMaskToken)");
        if (this.options.StudentTemperature <= 0) throw new ArgumentException("the student temperature must be positive");
        var device = ObjectiveInputs.DeviceOf(backbone);
        this.backbone = backbone;
        head = NewHead(config, this.options);
        head.to(device);
        // The teacher never drops paths (iBOT builds it without drop_path_rate) and never sees a mask.
        teacher = new EmaTeacher(new VisionTransformer(config with { DropPathRate = 0 }), NewHead(config, this.options));
        teacher.to(device);
        center = zeros(1, this.options.OutDim, device: device);
        patchCenter = zeros(1, 1, this.options.OutDim, device: device);
        RegisterComponents();
        foreach (var parameter in teacher.parameters()) parameter.requires_grad = false;
        SyncTeacher();
    }

    private static DinoHead NewHead(VitConfig config, IbotOptions options) =>
        new(config.EmbedDim, options.OutDim, options.HeadHidden, options.HeadBottleneck, options.NormLastLayer);

    public string Name => "ibot";

    public IbotOptions Options => options;

    public VisionTransformer Backbone => backbone;

    public DinoHead Head => head;

    public VisionTransformer TeacherBackbone => teacher.Backbone;

    public DinoHead TeacherHead => teacher.Head;

    /// <summary>The [CLS] center [1, K] (buffer <c>center</c>).</summary>
    public Tensor ClsCenter => center;

    /// <summary>The patch center [1, 1, K] (buffer <c>center2</c>).</summary>
    public Tensor PatchCenter => patchCenter;

    /// <summary>iBOT (as DINO) uses AdamW's default β 0.9/0.999.</summary>
    public double DefaultBeta2 => 0.999;

    /// <summary>The EMA teacher moves with the fp32 masters, so iBOT computes in fp32.</summary>
    public bool SupportsLowPrecision => false;

    /// <summary>iBOT all-reduces its centre statistics (the teacher outputs' sums and count) so every rank's centres match.</summary>
    public void UseCollective(ICollective collective) => this.collective = collective;

    /// <summary>iBOT's freeze_last_layer: no step for the prototypes during the first epoch.</summary>
    public void AfterBackward(StepPosition at)
    {
        if (at.Epoch < options.FreezeLastLayerEpochs) FreezeLastLayerGradients();
    }

    /// <summary>The teacher follows the student by EMA, its momentum on iBOT's cosine from 0.996 to 1 over the run.</summary>
    public void AfterStep(StepPosition at) => UpdateTeacher(CosineSchedule.EmaMomentum(at.TotalSteps).ValueAt(at.Step));

    public ObjectiveLoss Loss(IReadOnlyList<Tensor> globals, IReadOnlyList<Tensor> masks, IReadOnlyList<Tensor>? locals, double epoch) =>
        Loss(globals, masks, locals, TeacherTemperatures.Ibot(epoch));

    /// <summary>The student's backbone and head; never the teacher (no gradients) nor a fixed prototype gain.</summary>
    public IReadOnlyList<Parameter> TrainableParameters() => ObjectiveInputs.Trainable(this);

    /// <summary>
    /// DINO/iBOT's initialisation of the student (truncated normal 0.02 for linear weights, [CLS], position and mask
    /// embeddings; zero biases; LayerNorm 1/0; prototype gain 1; no residual rescaling), then the teacher set to it.
    /// </summary>
    public void Initialize(long seed)
    {
        Initialization.Apply(this, seed, backbone.Config.InitValues,
            name => !name.StartsWith("teacher.", StringComparison.Ordinal) && !name.EndsWith("weight_g", StringComparison.Ordinal),
            rescaleResiduals: false);
        using (no_grad())
        {
            foreach (var (name, parameter) in head.named_parameters())
                if (name.EndsWith("weight_g", StringComparison.Ordinal)) parameter.fill_(1.0);
            center.zero_();
            patchCenter.zero_();
        }
        SyncTeacher();
    }

    /// <summary>
    /// iBOT's freeze_last_layer (1 epoch): the student's prototypes (<c>head.last_layer</c>) take no gradient step
    /// during the first epoch, which stabilises the start. Called between backward and the optimizer step.
    /// </summary>
    public void FreezeLastLayerGradients()
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in named_parameters())
            if (name.StartsWith("head.last_layer.", StringComparison.Ordinal)) parameter.grad?.zero_();
    }

    /// <summary>The teacher set to the student, as iBOT starts (teacher.load_state_dict(student.state_dict())).</summary>
    public void SyncTeacher()
    {
        using var noGrad = no_grad();
        foreach (var (student, teacherParameter) in ParameterPairs()) teacherParameter.copy_(student);
    }

    /// <summary>
    /// The EMA step after each optimizer step: teacher ← m · teacher + (1 − m) · student for every parameter of backbone
    /// and head, m from iBOT's cosine schedule (0.996 → 1) supplied by the caller.
    /// </summary>
    public void UpdateTeacher(double momentum)
    {
        if (momentum is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, "the EMA momentum must lie in [0, 1]");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (student, teacherParameter) in ParameterPairs())
            teacherParameter.mul_(momentum).add_(student.detach() * (1 - momentum));
    }

    /// <summary>Student and teacher parameters by name, looked up each time because moving the module replaces them.</summary>
    private IEnumerable<(Parameter Student, Parameter Teacher)> ParameterPairs()
    {
        var teacherParameters = teacher.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in backbone.named_parameters()) yield return (parameter, teacherParameters["backbone." + name]);
        foreach (var (name, parameter) in head.named_parameters()) yield return (parameter, teacherParameters["head." + name]);
    }

    /// <param name="globals">The global crops, each [B, 3, S, S] at the backbone's image size (iBOT: 2 × 224).</param>
    /// <param name="masks">One [B, N] mask per global crop, 1 (or true) where masked; all-zero rows are allowed.</param>
    /// <param name="locals">Local crops, each [B, 3, s, s] (iBOT: 10 × 96), or null; same-size runs share a forward.</param>
    /// <param name="temperatures">The teacher's temperatures for this epoch or step (<see cref="TeacherTemperatureSchedule"/>).</param>
    public ObjectiveLoss Loss(IReadOnlyList<Tensor> globals, IReadOnlyList<Tensor> masks, IReadOnlyList<Tensor>? locals, TeacherTemperatures temperatures)
    {
        var config = backbone.Config;
        locals ??= [];
        if (globals.Count < 1) throw new ArgumentException("iBOT needs at least one global crop");
        if (masks.Count != globals.Count) throw new ArgumentException($"{masks.Count} masks for {globals.Count} global crops: each global crop needs its own mask");
        if (globals.Count + locals.Count < 2) throw new ArgumentException("cross-view [CLS] distillation needs at least two views");
        if (temperatures.Cls <= 0 || temperatures.Patch <= 0) throw new ArgumentException("teacher temperatures must be positive");
        long batch = globals[0].shape[0];
        foreach (var crop in globals)
        {
            ObjectiveInputs.CheckPixels(crop, config, "a global crop");
            if (crop.shape[0] != batch || crop.shape[2] != config.ImgSize || crop.shape[3] != config.ImgSize)
                throw new ArgumentException($"a global crop is [{string.Join(", ", crop.shape)}], expected [{batch}, {config.InChannels}, {config.ImgSize}, {config.ImgSize}]");
        }
        foreach (var crop in locals)
        {
            ObjectiveInputs.CheckPixels(crop, config, "a local crop");
            if (crop.shape[0] != batch) throw new ArgumentException($"a local crop has batch {crop.shape[0]}, the global crops {batch}");
        }

        using var scope = NewDisposeScope();
        var globalPixels = cat(globals.ToArray(), 0);
        var globalMask = cat(masks.Select(mask => ObjectiveInputs.BoolMask(mask, batch, config)).ToArray(), 0);

        Tensor teacherOutput;
        using (no_grad()) teacherOutput = teacher.Head.forward(teacher.Backbone.ForwardFeatures(globalPixels));
        var teacherCls = teacherOutput[.., 0];
        var teacherPatch = teacherOutput[.., 1..];

        var studentOutput = head.forward(backbone.ForwardFeatures(globalPixels, globalMask));
        var studentClsParts = new List<Tensor> { studentOutput[.., 0] };
        // The head is token-wise, so a local crop's [CLS] output needs only its [CLS] state.
        foreach (var run in SameSizeRuns(locals))
            studentClsParts.Add(head.forward(backbone.ForwardFeatures(cat(run.ToArray(), 0))[.., 0]));

        double studentTemperature = options.StudentTemperature;
        var studentCls = (cat(studentClsParts.ToArray(), 0) / studentTemperature).split(batch);
        var studentPatch = (studentOutput[.., 1..] / studentTemperature).split(batch);
        var teacherClsProbabilities = nn.functional.softmax((teacherCls - center) / temperatures.Cls, -1).split(batch);
        var teacherPatchProbabilities = nn.functional.softmax((teacherPatch - patchCenter) / temperatures.Patch, -1).split(batch);
        var viewMasks = globalMask.to(studentOutput.dtype).split(batch);

        Tensor? clsSum = null, patchSum = null;
        int clsPairs = 0, patchPairs = 0;
        for (int q = 0; q < globals.Count; q++)
        {
            for (int v = 0; v < studentCls.Length; v++)
            {
                if (v == q)
                {
                    var perPatch = (-teacherPatchProbabilities[q] * nn.functional.log_softmax(studentPatch[v], -1)).sum(-1);
                    var perImage = (perPatch * viewMasks[v]).sum(-1) / viewMasks[v].sum(-1).clamp_min(1.0);
                    patchSum = patchSum is null ? perImage.mean() : patchSum + perImage.mean();
                    patchPairs++;
                }
                else
                {
                    var perImage = (-teacherClsProbabilities[q] * nn.functional.log_softmax(studentCls[v], -1)).sum(-1);
                    clsSum = clsSum is null ? perImage.mean() : clsSum + perImage.mean();
                    clsPairs++;
                }
            }
        }
        var clsLoss = clsSum! / clsPairs * options.ClsWeight;
        var patchLoss = patchSum! / patchPairs * options.PatchWeight;

        var diagnostics = new List<LossTerm>();
        if (globals.Count >= 2)
        {
            // iBOT's "acc": does the student's [CLS] prototype for view 2 match the teacher's for view 1?
            using var noGrad = no_grad();
            var agreement = teacherCls[..(int)batch].argmax(-1).eq(studentOutput[(int)batch..(2 * (int)batch), 0].argmax(-1));
            diagnostics.Add(new("acc", agreement.to(ScalarType.Float32).mean()));
        }
        if (training) UpdateCenters(teacherCls, teacherPatch);
        return new ObjectiveLoss(clsLoss + patchLoss, [new("cls", clsLoss), new("patch", patchLoss)], diagnostics) { Items = batch }.MoveToOuterDisposeScope();
    }

    /// <summary>center ← m · center + (1 − m) · mean over the global batch of the teacher's raw outputs (patches: mean over patches first).</summary>
    private void UpdateCenters(Tensor teacherCls, Tensor teacherPatch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long count = teacherCls.shape[0];
        var clsSum = teacherCls.sum(0, keepdim: true);
        var patchSum = teacherPatch.mean([1]).sum(0, keepdim: true);
        if (collective.WorldSize > 1)
        {
            // As iBOT's update_center: the sums of the global batch (one all-reduce with the count), then divided.
            long k = clsSum.shape[1];
            var sums = cat([clsSum.to(ScalarType.Float32), patchSum.to(ScalarType.Float32), full([1, 1], (float)count, device: clsSum.device)], 1).contiguous();
            collective.AllReduceSum(sums, "iBOT centre statistics");
            count = (long)Math.Round(sums[0, 2 * k].item<float>());
            clsSum = sums.narrow(1, 0, k).to(teacherCls.dtype);
            patchSum = sums.narrow(1, k, k).to(teacherPatch.dtype);
        }
        var clsMean = clsSum / count;
        center.mul_(options.CenterMomentum).add_(clsMean * (1 - options.CenterMomentum));
        var patchMean = patchSum / count;
        patchCenter.mul_(options.PatchCenterMomentum).add_(patchMean.unsqueeze(0) * (1 - options.PatchCenterMomentum));
    }

    /// <summary>Consecutive crops of one size, batched into one forward as iBOT's MultiCropWrapper does.</summary>
    private static IEnumerable<List<Tensor>> SameSizeRuns(IReadOnlyList<Tensor> crops)
    {
        var run = new List<Tensor>();
        foreach (var crop in crops)
        {
            if (run.Count > 0 && (run[0].shape[2] != crop.shape[2] || run[0].shape[3] != crop.shape[3]))
            {
                yield return run;
                run = [];
            }
            run.Add(crop);
        }
        if (run.Count > 0) yield return run;
    }

    /// <summary>The EMA teacher's backbone and head, registered as <c>teacher.backbone</c> and <c>teacher.head</c>.</summary>
    private sealed class EmaTeacher : nn.Module
    {
        [ComponentName(Name = "backbone")] private readonly VisionTransformer backbone;
        [ComponentName(Name = "head")] private readonly DinoHead head;

        public EmaTeacher(VisionTransformer backbone, DinoHead head) : base("EmaTeacher")
        {
            this.backbone = backbone;
            this.head = head;
            RegisterComponents();
        }

        public VisionTransformer Backbone => backbone;

        public DinoHead Head => head;
    }
}
