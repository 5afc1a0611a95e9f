using MimFlow.Core.Safetensors;
using MimFlow.Training.Runs;

namespace MimFlow.Tests.Training;

/// <summary>What the resume tests compare between an uninterrupted run and a resumed one.</summary>
internal static class RunAssertions
{
    public static List<double> Losses(string run) => MetricsLog.Read(run).Select(e => e["loss"]!.GetValue<double>()).ToList();

    public static List<long> Steps(string run) => MetricsLog.Read(run).Select(e => e["step"]!.GetValue<long>()).ToList();

    /// <summary>Every parameter, buffer and optimiser tensor of two checkpoints is bit-equal.</summary>
    public static void SameTrainingState(string expectedCheckpoint, string actualCheckpoint)
    {
        using var expected = SafetensorsFile.Open(Path.Combine(expectedCheckpoint, "training.safetensors"));
        using var actual = SafetensorsFile.Open(Path.Combine(actualCheckpoint, "training.safetensors"));
        Assert.Equal(expected.Entries.Select(e => e.Name).Order(StringComparer.Ordinal), actual.Entries.Select(e => e.Name).Order(StringComparer.Ordinal));
        foreach (var entry in expected.Entries)
            Assert.True(expected.ReadFloat32(entry.Name).SequenceEqual(actual.ReadFloat32(entry.Name)), $"{entry.Name} differs");
    }
}
