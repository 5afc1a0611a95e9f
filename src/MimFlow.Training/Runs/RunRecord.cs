using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MimFlow.Core.IO;
using MimFlow.Torch.Backend;
using static TorchSharp.torch;

namespace MimFlow.Training.Runs;

/// <summary>An input a run read, by its identity: the SHA-256 of the files that determine it.</summary>
public sealed record RunInput(string Role, string Path, IReadOnlyDictionary<string, string> Sha256)
{
    /// <summary>A shard set: its manifest (which itself lists every shard's SHA-256).</summary>
    public static RunInput Shards(string directory) =>
        new("shards", System.IO.Path.GetFullPath(directory), new Dictionary<string, string> { ["manifest.json"] = FolderChecksums.Sha256Of(System.IO.Path.Combine(directory, "manifest.json")) });

    /// <summary>A model directory (an architecture name has no files and is recorded by name).</summary>
    public static RunInput Model(string role, string model)
    {
        string directory = Models.Interop.ModelDirectory.Locate(model);
        if (!File.Exists(System.IO.Path.Combine(directory, Models.Interop.ModelDirectory.ConfigFileName)))
            return new RunInput(role, model, new Dictionary<string, string>());
        return new RunInput(role, System.IO.Path.GetFullPath(directory), new Dictionary<string, string>
        {
            ["config.json"] = FolderChecksums.Sha256Of(System.IO.Path.Combine(directory, Models.Interop.ModelDirectory.ConfigFileName)),
            ["weights.safetensors"] = FolderChecksums.Sha256Of(System.IO.Path.Combine(directory, Models.Interop.ModelDirectory.WeightsFileName)),
        });
    }

    /// <summary>A dataset: its location (a listing is not hashed: it can be a million files).</summary>
    public static RunInput Dataset(string data, string layout) => new("data", data, new Dictionary<string, string> { ["layout"] = layout });
}

/// <summary>
/// <c>run.json</c>: one entry per start of a run (the first, then each resume), written atomically before the first
/// step: the command, the time, every resolved option of its request, the versions (MimFlow's commit, .NET,
/// TorchSharp, libtorch, libvips), the device, the compute type, the world size, the steps planned, and the identity
/// of the inputs, so a run folder says what made it.
/// </summary>
public static class RunRecord
{
    public const string FileName = "run.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,  // "0.1.0+commit", paths with non-ASCII letters: as written
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower), new DeviceConverter() },
    };

    public static void Append<TRequest>(string runDirectory, string command, TRequest request, Device device, string computeType, int worldSize, long totalSteps,
        IEnumerable<RunInput> inputs, DateTimeOffset? now = null)
    {
        string path = Path.Combine(runDirectory, FileName);
        var starts = File.Exists(path) && JsonNode.Parse(File.ReadAllText(path))?["starts"] is JsonArray earlier ? earlier : new JsonArray();
        var start = new JsonObject
        {
            ["command"] = command,
            ["time"] = (now ?? DateTimeOffset.UtcNow).ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture),
            ["options"] = JsonSerializer.SerializeToNode(request, Json),
            ["device"] = device.ToString(),
            ["compute_type"] = computeType,
            ["world_size"] = worldSize,
            ["total_steps"] = totalSteps,
            ["versions"] = JsonSerializer.SerializeToNode(Versions(), Json),
            ["inputs"] = JsonSerializer.SerializeToNode(inputs.ToList(), Json),
        };
        starts.Add(start);
        AtomicFile.WriteAllText(path, new JsonObject { ["starts"] = starts.DeepClone() }.ToJsonString(Json));
    }

    /// <summary>The starts recorded so far (oldest first), or none.</summary>
    public static IReadOnlyList<JsonObject> Read(string runDirectory)
    {
        string path = Path.Combine(runDirectory, FileName);
        if (!File.Exists(path)) return [];
        try
        {
            return JsonNode.Parse(File.ReadAllText(path))?["starts"] is JsonArray starts ? starts.OfType<JsonObject>().ToList() : [];
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a run record ({e.Message})", e); }
    }

    private static Dictionary<string, string> Versions()
    {
        var backend = TorchBackend.EnsureLoaded();
        return new Dictionary<string, string>
        {
            ["mimflow"] = (Assembly.GetEntryAssembly() ?? typeof(RunRecord).Assembly).GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown",
            ["dotnet"] = Environment.Version.ToString(),
            ["torchsharp"] = backend.TorchSharpVersion,
            ["libtorch"] = backend.LibTorchVersion,
            ["libvips"] = Data.Decoding.LibvipsSettings.Version,
        };
    }

    private sealed class DeviceConverter : JsonConverter<Device>
    {
        public override Device Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => new(reader.GetString()!);

        public override void Write(Utf8JsonWriter writer, Device value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
