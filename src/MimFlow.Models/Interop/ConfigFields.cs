using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace MimFlow.Models.Interop;

/// <summary>
/// Checks a JSON configuration against the records it deserialises into, field by field, before deserialising: every
/// field known (typos and fields of other versions are refused by name, not ignored), every settable non-nullable
/// field present (a missing size is not silently a default), every value of its field's type (an int in int range,
/// a finite number, a boolean, one of an enum's names). The records' own serializer contract lists the fields, so
/// a field added to a record is known here at once.
/// </summary>
internal static class ConfigFields
{
    /// <summary>Configuration files are small (a label list is the largest part); past this a file is not one.</summary>
    public const long MaxConfigBytes = 64L << 20;

    /// <summary>A configuration file's text, refusing one too large to be a configuration before reading it.</summary>
    public static string ReadText(string path)
    {
        long length = new FileInfo(path).Length;
        if (length > MaxConfigBytes) throw new InvalidDataException($"{path}: {length:N0} bytes is too large for a configuration file (limit {MaxConfigBytes:N0})");
        return File.ReadAllText(path);
    }

    /// <summary>
    /// A configuration file's JSON object. A key given twice is refused (System.Text.Json would otherwise keep one
    /// silently, or fail later with an ArgumentException when the object is first read).
    /// </summary>
    public static JsonObject ParseObject(string path, string text, string what)
    {
        try
        {
            return JsonNode.Parse(text, documentOptions: Strict) as JsonObject ?? throw new InvalidDataException($"{path}: not {what} (not a JSON object)");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not {what} ({e.Message})", e);
        }
    }

    /// <summary>Document options for configuration files: duplicate keys are an error.</summary>
    public static JsonDocumentOptions Strict => new() { AllowDuplicateProperties = false };

    /// <param name="derived">Receives the paths of read-only fields present (derived values the caller compares).</param>
    public static void Check(JsonObject node, JsonTypeInfo info, JsonSerializerOptions options, string source, string prefix, List<string> derived)
    {
        var properties = info.Properties.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var (key, value) in node)
        {
            string path = prefix + key;
            if (!properties.TryGetValue(key, out var property))
                throw new InvalidDataException($"{source}: unknown field '{path}' (known here: {string.Join(", ", properties.Keys.Order(StringComparer.Ordinal))})");
            if (property.Set is null)
            {
                derived.Add(path);
                continue;
            }
            if (TypeProblem(value, property, options) is string problem)
                throw new InvalidDataException($"{source}: {path} is {value?.ToJsonString() ?? "null"}, not {problem}");
            if (value is JsonObject inner && IsRecord(property.PropertyType))
                Check(inner, options.GetTypeInfo(property.PropertyType), options, source, path + ".", derived);
        }
        foreach (var property in info.Properties)
            if (property.Set is not null && !IsNullable(property) && !node.ContainsKey(property.Name))
                throw new InvalidDataException($"{source}: {prefix + property.Name} is missing");
    }

    /// <summary>The node at a dotted path, or null.</summary>
    public static JsonNode? At(JsonNode root, string path)
    {
        JsonNode? node = root;
        foreach (string part in path.Split('.')) node = node is JsonObject o ? o[part] : null;
        return node;
    }

    /// <summary>What the value should be (in words) where it is not of the property's type, else null.</summary>
    private static string? TypeProblem(JsonNode? value, JsonPropertyInfo property, JsonSerializerOptions options)
    {
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        if (value is null) return IsNullable(property) ? null : Describe(type);
        bool ok = type switch
        {
            _ when type == typeof(int) => value is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out _),
            _ when type == typeof(long) => value is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out _),
            _ when type == typeof(double) => value is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out double d) && double.IsFinite(d),
            _ when type == typeof(bool) => value.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
            _ when type == typeof(string) => value.GetValueKind() == JsonValueKind.String,
            _ when type.IsEnum => value.GetValueKind() == JsonValueKind.String && EnumNames(type, options).Contains(value.GetValue<string>()),
            _ when IsRecord(type) => value is JsonObject,
            _ => true,
        };
        return ok ? null : Describe(type, options);
    }

    private static string Describe(Type type, JsonSerializerOptions? options = null) => type switch
    {
        _ when type == typeof(int) => "an integer in -2147483648…2147483647",
        _ when type == typeof(long) => "a 64-bit integer",
        _ when type == typeof(double) => "a finite number",
        _ when type == typeof(bool) => "true or false",
        _ when type == typeof(string) => "a string",
        _ when type.IsEnum => $"one of {string.Join(", ", EnumNames(type, options ?? JsonSerializerOptions.Default))}",
        _ => "an object",
    };

    private static IEnumerable<string> EnumNames(Type type, JsonSerializerOptions options) =>
        Enum.GetNames(type).Select(name => options.PropertyNamingPolicy?.ConvertName(name) ?? name);

    /// <summary>The configuration records (ViT, VQ-KD, dVAE) nest; everything else is a leaf.</summary>
    private static bool IsRecord(Type type) => type.IsClass && type != typeof(string) && type.Namespace?.StartsWith("MimFlow.", StringComparison.Ordinal) == true;

    /// <summary>Whether a field may be left out: a nullable value type, or a reference declared nullable (string?, VitConfig?).</summary>
    private static bool IsNullable(JsonPropertyInfo property)
    {
        if (Nullable.GetUnderlyingType(property.PropertyType) is not null) return true;
        if (property.PropertyType.IsValueType || property.AttributeProvider is not PropertyInfo info) return false;
        return new NullabilityInfoContext().Create(info).ReadState == NullabilityState.Nullable;
    }
}
