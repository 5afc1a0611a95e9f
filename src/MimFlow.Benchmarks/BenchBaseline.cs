using System.Text.Json;
using System.Text.Json.Serialization;

namespace MimFlow.Benchmarks;

/// <summary>An accepted ratio for one stage and how far below it a run may fall before it counts as a regression.</summary>
/// <param name="Tolerance">Allowed relative drop, e.g. 0.3: a ratio under 70 % of the baseline regresses.</param>
public sealed record BaselineStage(double Ratio, double Tolerance, string Reference);

/// <summary><c>ops/bench/baseline.json</c>: the accepted ratios of one suite form, with where they were measured.</summary>
public sealed record BenchBaseline(string Form, string MeasuredOn, string Note, IReadOnlyDictionary<string, BaselineStage> Stages)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static BenchBaseline Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such baseline file", path);
        try
        {
            var baseline = JsonSerializer.Deserialize<BenchBaseline>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path}: empty baseline");
            if (baseline.Stages is null || baseline.Stages.Count == 0) throw new InvalidDataException($"{path}: no stages");
            foreach (var (stage, entry) in baseline.Stages)
                if (entry.Ratio <= 0 || entry.Tolerance is < 0 or >= 1)
                    throw new InvalidDataException($"{path}: stage '{stage}' needs a positive ratio and a tolerance in [0, 1)");
            return baseline;
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a baseline ({e.Message})", e); }
    }

    /// <summary>The relative drop <c>--accept</c> allows unless told: shared 2-core machines vary by about ±35 %.</summary>
    public const double DefaultTolerance = 0.35;

    /// <summary>A baseline accepting a run's ratios, each with the given tolerance.</summary>
    public static BenchBaseline Accept(SuiteResult result, double tolerance) => new(result.Form,
        $"{result.Versions["os"]}, {result.Versions["cores"]} cores, {result.Device}, gpu {result.Versions["gpu"]}",
        "ratios of each stage's median to its same-run reference (mimflow bench); regenerate with mimflow bench --accept FILE",
        result.Stages.ToDictionary(s => s.Stage, s => new BaselineStage(Math.Round(s.Ratio, 6), tolerance, s.Reference)));

    public string ToJson() => JsonSerializer.Serialize(this, Json);
}

/// <param name="Change">Now over baseline, minus one (−0.25: a quarter slower relative to the reference).</param>
public sealed record StageCheck(string Stage, double Baseline, double? Now, double? Change, double Tolerance, bool Regressed);

public static class BaselineCheck
{
    /// <summary>Every baseline stage against the run; a stage the run lacks counts as regressed (it was not measured),
    /// unless the run measured a chosen <paramref name="subset"/> of stages: then only those are checked.</summary>
    public static IReadOnlyList<StageCheck> Compare(BenchBaseline baseline, SuiteResult result, bool subset = false) =>
        baseline.Stages.Where(entry => !subset || result.Stages.Any(s => s.Stage == entry.Key)).Select(entry =>
        {
            var figure = result.Stages.FirstOrDefault(s => s.Stage == entry.Key);
            if (figure is null) return new StageCheck(entry.Key, entry.Value.Ratio, null, null, entry.Value.Tolerance, Regressed: true);
            double change = figure.Ratio / entry.Value.Ratio - 1;
            return new StageCheck(entry.Key, entry.Value.Ratio, figure.Ratio, change, entry.Value.Tolerance, Regressed: change < -entry.Value.Tolerance);
        }).ToList();
}
