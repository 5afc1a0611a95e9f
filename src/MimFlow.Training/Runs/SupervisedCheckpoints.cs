using System.Text.Json;
using System.Text.Json.Serialization;
using MimFlow.Models.Interop;
using MimFlow.Training.Optimization;
using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>What a supervised run carries across epochs besides weights and optimiser: <c>supervised.json</c> in each checkpoint.</summary>
/// <param name="StepsPerEpoch">Full batches per epoch when saved: a resume over another training split or batch size would be another run.</param>
public sealed record SupervisedState<TEvaluation>(int BatchSize, long StepsPerEpoch, StepTally Tally, IReadOnlyList<TEvaluation> Evaluations);

/// <summary>
/// Epoch-boundary checkpoints of a supervised run (classification fine-tuning, linear probing, segmentation) through
/// <see cref="CheckpointStore"/>, and <c>--resume</c> from the latest. A checkpoint holds the model (head included) and
/// the optimiser state, <c>state.json</c> (steps taken, epochs done, task, seed) and <c>supervised.json</c> (the step
/// tally and every evaluation so far, so <c>eval.json</c> and the result cover the whole run). Nothing else needs
/// saving: the learning rate, mixing and stochastic depth are functions of (seed, step), batches and augmentations of
/// (seed, epoch, position), so on CPU a resumed run's losses and evaluations equal the uninterrupted run's.
/// <para>
/// Without resume, a folder holding a checkpoint is refused (a finished run is never overwritten; an unfinished one
/// is pointed at <c>--resume</c>). A resumed run whose checkpoint already covers every epoch is <see cref="Complete"/>:
/// the caller reports it and trains nothing.
/// </para>
/// </summary>
public sealed class SupervisedCheckpoints<TEvaluation>
{
    public const string FileName = "supervised.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly CheckpointStore store;
    private readonly string runDirectory;
    private readonly string task;
    private readonly ulong seed;
    private readonly int batchSize;
    private readonly TrainerState? resumed;
    private readonly SupervisedState<TEvaluation>? saved;
    private long? stepsPerEpoch;

    private SupervisedCheckpoints(string runDirectory, string task, ulong seed, int batchSize, string? checkpoint, TrainerState? resumed,
        SupervisedState<TEvaluation>? saved, bool complete)
    {
        store = new CheckpointStore(runDirectory);
        this.runDirectory = runDirectory;
        this.task = task;
        this.seed = seed;
        this.batchSize = batchSize;
        this.resumed = resumed;
        this.saved = saved;
        Checkpoint = checkpoint;
        Complete = complete;
        Evaluations = saved?.Evaluations.ToList() ?? [];
    }

    /// <summary>The latest checkpoint: the one resumed from, then each one saved.</summary>
    public string? Checkpoint { get; private set; }

    /// <summary>A resumed run whose checkpoint already covers every epoch: nothing is left to train.</summary>
    public bool Complete { get; }

    /// <summary>Steps taken before this process: the resumed checkpoint's, or 0.</summary>
    public long StepsTaken => resumed?.Step ?? 0;

    /// <summary>The step tally before this process (for a complete run: the run's).</summary>
    public StepTally Tally => saved?.Tally ?? StepTally.None;

    /// <summary>Every evaluation so far: the checkpoint's, then the caller adds one per epoch before <see cref="Save"/>.</summary>
    public List<TEvaluation> Evaluations { get; }

    /// <summary>Checks the run folder against <paramref name="resume"/> and reads the checkpoint to resume from.</summary>
    /// <param name="task">What trains (the state's objective): a resume must name the same, as it must the seed and batch size.</param>
    public static SupervisedCheckpoints<TEvaluation> Open(string runDirectory, string task, ulong seed, int batchSize, int epochs, bool resume)
    {
        string? latest = Directory.Exists(runDirectory) ? new CheckpointStore(runDirectory).Latest() : null;
        if (!resume)
        {
            if (latest is null) return new SupervisedCheckpoints<TEvaluation>(runDirectory, task, seed, batchSize, null, null, null, false);
            var found = CheckpointStore.ReadState(latest);
            throw new ArgumentException(found.Objective != task ? $"{runDirectory}: holds a {found.Objective} run already; choose a new folder"
                : found.Epoch >= epochs ? $"{runDirectory}: holds a finished run already; choose a new folder"
                : $"{runDirectory}: holds an unfinished run (checkpoint after epoch {found.Epoch} of {epochs}); pass --resume to continue it or choose a new folder");
        }
        if (latest is null)
            throw new ArgumentException($"{runDirectory}: no checkpoint to resume from (no {CheckpointStore.LatestFileName}); start the run without --resume");
        var state = CheckpointStore.ReadState(latest);
        if (state.Objective != task || state.Seed != seed)
            throw new ArgumentException($"{latest}: a {state.Objective} run with seed {state.Seed}; resume it with the same --task and --seed");
        string file = Path.Combine(latest, FileName);
        if (!File.Exists(file))
            throw new ArgumentException($"{latest}: no {FileName} (written before fine-tuning could resume); it cannot be resumed, start a new run");
        var saved = JsonSerializer.Deserialize<SupervisedState<TEvaluation>>(File.ReadAllText(file), Json)
            ?? throw new InvalidDataException($"{file}: empty");
        if (saved.BatchSize != batchSize)
            throw new ArgumentException($"{latest}: a run with batch {saved.BatchSize}; resume it with the same --batch");
        return new SupervisedCheckpoints<TEvaluation>(runDirectory, task, seed, batchSize, latest, state, saved, state.Epoch >= epochs);
    }

    /// <summary>Loads the resumed checkpoint's weights and optimiser state (a new run: nothing); call after the optimiser exists, as its parameters are views of its buffer.</summary>
    /// <param name="architecture">The model's architecture name, which must be the checkpoint's.</param>
    public void Restore(string architecture, nn.Module model, FlatAdamW optimizer)
    {
        if (resumed is null) return;
        if (resumed.Model != architecture)
            throw new ArgumentException($"{Checkpoint}: a run of {resumed.Model}, not {architecture}; resume it with the same --model");
        var tensors = CheckpointStore.Restore(Checkpoint!, model);
        try
        {
            optimizer.LoadState(tensors);
        }
        finally
        {
            foreach (var tensor in tensors.Values) tensor.Dispose();
        }
    }

    /// <summary>Where the loop begins: the checkpoint's epoch boundary, provided the training split still makes the same epochs.</summary>
    public EpochStart Start(long stepsPerEpoch)
    {
        this.stepsPerEpoch = stepsPerEpoch;
        if (resumed is null) return EpochStart.Beginning;
        if (saved!.StepsPerEpoch != stepsPerEpoch)
            throw new ArgumentException($"{Checkpoint}: {saved.StepsPerEpoch} steps per epoch, now {stepsPerEpoch}; resume over the same training split and --batch");
        return new EpochStart(resumed.Epoch, resumed.Step);
    }

    /// <summary>metrics.jsonl: a new one, or the resumed one without the lines after the checkpoint (each step exactly once).</summary>
    /// <param name="collective">Data parallelism: rank 0 writes the log (every line with the world size), the others discard.</param>
    public MetricsLog OpenMetrics(Distributed.ICollective? collective = null) => collective is { Rank: > 0 }
        ? MetricsLog.Discard(collective.WorldSize)
        : MetricsLog.Open(runDirectory, resumed is null ? null : resumed.Step - 1, collective?.WorldSize ?? 1);

    public StepTracker Tracker(MetricsLog metrics, int maxConsecutiveNonFinite) => new(metrics, maxConsecutiveNonFinite, Tally);

    /// <summary>Saves a checkpoint after <paramref name="epochsDone"/> epochs (<paramref name="steps"/> steps) with <see cref="Evaluations"/>; returns its folder.</summary>
    /// <param name="backbone">What the checkpoint's <c>backbone/</c> model directory holds (described by <paramref name="spec"/>).</param>
    /// <param name="model">Everything that trains, restored by <see cref="Restore"/>.</param>
    /// <param name="files">The loop's own further files (name → text).</param>
    public string Save(long steps, int epochsDone, StepTracker tracker, ModelSpec spec, nn.Module backbone, nn.Module model, FlatAdamW optimizer,
        IReadOnlyDictionary<string, string>? files = null)
    {
        long perEpoch = stepsPerEpoch ?? throw new InvalidOperationException($"{nameof(Start)} must run before {nameof(Save)}");
        var state = new TrainerState(steps, epochsDone, 0, tracker.Skipped, task, spec.Architecture, seed);
        var all = new Dictionary<string, string>(files ?? new Dictionary<string, string>())
        {
            [FileName] = JsonSerializer.Serialize(new SupervisedState<TEvaluation>(batchSize, perEpoch, tracker.Tally, Evaluations), Json),
        };
        var optimizerState = optimizer.StateTensors();
        try
        {
            Checkpoint = store.Save(state, spec, backbone, model, optimizerState, all);
        }
        finally
        {
            foreach (var tensor in optimizerState.Values) tensor.Dispose();
        }
        return Checkpoint;
    }
}
