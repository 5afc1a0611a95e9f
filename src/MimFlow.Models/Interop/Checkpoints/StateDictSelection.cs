using System.Globalization;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>The model's tensors found in a checkpoint's object, by name, and every entry left aside.</summary>
internal sealed record SelectedTensors(IReadOnlyList<KeyValuePair<string, TensorRecord>> Tensors, IReadOnlyList<string> LeftOut);

/// <summary>
/// Finds the state dict in what a checkpoint pickles (docs/model-interop.md, "Checkpoint files"):
/// <list type="number">
/// <item>With a key (<c>--state-dict-key</c>; <c>a/b</c> for nested dicts), that entry.</item>
/// <item>Otherwise, descending from the top while the value is a dict that neither holds tensors nor is a module:
/// the first of <see cref="WrapperKeys"/> present whose value is a dict or a module; failing those, the one entry
/// whose value holds tensors or is a module (several such entries are an error naming them).</item>
/// <item>The value found is read as a pickled <c>nn.Module</c> (its <c>_parameters</c>, persistent <c>_buffers</c> and
/// <c>_modules</c>, recursively, dotted), a TorchScript module (its tensor attributes and submodules), or a dict of
/// tensors.</item>
/// <item>A prefix every name has is stripped: <c>module.</c> (DistributedDataParallel, repeatedly), then, when every
/// name is under <c>backbone.</c> or <c>head.</c> (DINO/iBOT's MultiCropWrapper), <c>backbone.</c> — the
/// projection head is left out.</item>
/// </list>
/// Every entry passed over on the way and every non-tensor entry of the state dict is reported as left out.
/// </summary>
internal static class StateDictSelection
{
    /// <summary>Keys that wrap a state dict, in the order they are tried.</summary>
    public static IReadOnlyList<string> WrapperKeys { get; } = ["model", "state_dict", "module", "teacher"];

    private const int MaxWrapperDepth = 8, MaxModuleDepth = 128, MaxModuleVisits = 1_000_000;

    public static SelectedTensors Select(object? root, string? stateDictKey, string origin)
    {
        var leftOut = new List<string>();
        object? value = root;
        string path = "";
        if (stateDictKey is not null)
        {
            foreach (string part in stateDictKey.Split('/'))
            {
                var dict = EntriesOf(value) ?? throw new InvalidDataException($"{origin}: --state-dict-key '{stateDictKey}': {(path.Length == 0 ? "the checkpoint" : $"'{path.TrimEnd('/')}'")} is a {AdmittedGlobals.Describe(value)}, not a dict");
                if (!dict.TryGet(part, out var child))
                    throw new InvalidDataException($"{origin}: --state-dict-key '{stateDictKey}': no entry '{part}'{(path.Length == 0 ? "" : $" in '{path.TrimEnd('/')}'")}; the entries are {KeyList(dict)}");
                LeaveOutSiblings(dict, part, path, leftOut);
                value = child;
                path += part + "/";
            }
        }
        else
        {
            for (int depth = 0; ; depth++)
            {
                if (IsModule(value) || IsScriptObject(value) || (value is PickleDict direct && HoldsTensors(direct))) break;
                if (value is not PickleDict dict || depth == MaxWrapperDepth)
                    throw new InvalidDataException($"{origin}: {(path.Length == 0 ? "the checkpoint" : $"'{path.TrimEnd('/')}'")} is a {AdmittedGlobals.Describe(value)}, not a state dict or a module");
                string chosen = WrapperKeys.FirstOrDefault(key => dict.TryGet(key, out var wrapped) && (wrapped is PickleDict || IsModule(wrapped) || IsScriptObject(wrapped)))
                    ?? OnlyEntryWithTensors(dict, path, origin);
                LeaveOutSiblings(dict, chosen, path, leftOut);
                value = dict[chosen];
                path += chosen + "/";
            }
        }

        var tensors = new List<KeyValuePair<string, TensorRecord>>();
        if (IsModule(value) || IsScriptObject(value))
        {
            int visits = 0;
            FlattenModule((InertObject)value!, "", tensors, leftOut, [], ref visits, origin);
        }
        else if (value is PickleDict stateDict) FlattenDict(stateDict, path, tensors, leftOut);
        else throw new InvalidDataException($"{origin}: '{path.TrimEnd('/')}' is a {AdmittedGlobals.Describe(value)}, not a state dict or a module");
        if (tensors.Count == 0)
            throw new InvalidDataException($"{origin}: {(path.Length == 0 ? "the checkpoint" : $"'{path.TrimEnd('/')}'")} holds no tensors");
        return new SelectedTensors(StripPrefixes(tensors, leftOut), leftOut);
    }

    /// <summary>A pickled nn.Module: an inert object whose state has the module bookkeeping dicts.</summary>
    private static bool IsModule(object? value) =>
        value is InertObject { StateDict: { } state } && (state.TryGet("_parameters", out _) || state.TryGet("_modules", out _));

    /// <summary>A TorchScript module: its classes live under <c>__torch__</c>, its state is its attributes.</summary>
    private static bool IsScriptObject(object? value) =>
        value is InertObject { StateDict: not null } inert && inert.Type.Module.StartsWith("__torch__", StringComparison.Ordinal);

    private static bool HoldsTensors(PickleDict dict) => dict.Entries.Any(entry => entry.Value is TensorRecord);

    private static PickleDict? EntriesOf(object? value) => value switch
    {
        PickleDict dict => dict,
        InertObject { HasDictItems: true } subclass => subclass.DictItems, // a dict subclass (EasyDict): its items
        InertObject { StateDict: { } state } => state, // argparse.Namespace and the like: their attributes
        _ => null,
    };

    private static string OnlyEntryWithTensors(PickleDict dict, string path, string origin)
    {
        var candidates = dict.Entries.Where(entry => entry.Key is string && (entry.Value is PickleDict inner && HoldsTensors(inner) || IsModule(entry.Value) || IsScriptObject(entry.Value)))
            .Select(entry => (string)entry.Key!).ToList();
        string where = path.Length == 0 ? "the checkpoint" : $"'{path.TrimEnd('/')}'";
        return candidates.Count switch
        {
            1 => candidates[0],
            0 => throw new InvalidDataException($"{origin}: no state dict found: {where} has entries {KeyList(dict)}, none a dict of tensors or a module; name one with --state-dict-key"),
            _ => throw new InvalidDataException($"{origin}: several entries of {where} hold tensors ({string.Join(", ", candidates)}) and none is one of {string.Join(", ", WrapperKeys)}; choose one with --state-dict-key"),
        };
    }

    private static void LeaveOutSiblings(PickleDict dict, string chosen, string path, List<string> leftOut)
    {
        foreach (var (key, _) in dict.Entries)
            if (key is not string name || name != chosen) leftOut.Add(path + KeyText(key));
    }

    private static void FlattenDict(PickleDict stateDict, string path, List<KeyValuePair<string, TensorRecord>> tensors, List<string> leftOut)
    {
        foreach (var (key, value) in stateDict.Entries)
        {
            if (key is string name && value is TensorRecord tensor) tensors.Add(new(name, tensor));
            else leftOut.Add(path + KeyText(key));
        }
    }

    /// <summary>
    /// What <c>module.state_dict()</c> would list, read from the pickled object tree: parameters, then persistent
    /// buffers, then each submodule under its name. A TorchScript object lists its tensor attributes and
    /// submodules in attribute order. Shared submodules appear under each name (as in a state dict); cycles and
    /// pathological sharing are cut off.
    /// </summary>
    private static void FlattenModule(InertObject module, string prefix, List<KeyValuePair<string, TensorRecord>> tensors, List<string> leftOut,
        HashSet<InertObject> onPath, ref int visits, string origin)
    {
        if (++visits > MaxModuleVisits || onPath.Count >= MaxModuleDepth)
            throw new InvalidDataException($"{origin}: the module tree is deeper than {MaxModuleDepth} levels or visits over {MaxModuleVisits} modules (a damaged or hostile file)");
        if (!onPath.Add(module)) throw new InvalidDataException($"{origin}: the module tree contains itself at '{prefix.TrimEnd('.')}' (a damaged or hostile file)");
        var state = module.StateDict!;
        if (IsModule(module))
        {
            if (state["_parameters"] is PickleDict parameters)
                foreach (var (key, value) in parameters.Entries)
                    if (key is string name && value is TensorRecord tensor) tensors.Add(new(prefix + name, tensor));
            var nonPersistent = state["_non_persistent_buffers_set"] is PickleSet set ? set.OfType<string>().ToHashSet(StringComparer.Ordinal) : [];
            if (state["_buffers"] is PickleDict buffers)
                foreach (var (key, value) in buffers.Entries)
                {
                    if (key is not string name || value is not TensorRecord tensor) continue;
                    if (nonPersistent.Contains(name)) leftOut.Add(prefix + name);
                    else tensors.Add(new(prefix + name, tensor));
                }
            if (state["_modules"] is PickleDict children)
                foreach (var (key, value) in children.Entries)
                    if (key is string name && value is InertObject child && (IsModule(child) || IsScriptObject(child)))
                        FlattenModule(child, prefix + name + ".", tensors, leftOut, onPath, ref visits, origin);
        }
        else
        {
            foreach (var (key, value) in state.Entries)
            {
                if (key is not string name) continue;
                if (value is TensorRecord tensor) tensors.Add(new(prefix + name, tensor));
                else if (value is InertObject child && IsScriptObject(child)) FlattenModule(child, prefix + name + ".", tensors, leftOut, onPath, ref visits, origin);
            }
        }
        onPath.Remove(module);
    }

    private static List<KeyValuePair<string, TensorRecord>> StripPrefixes(List<KeyValuePair<string, TensorRecord>> tensors, List<string> leftOut)
    {
        static bool AllUnder(List<KeyValuePair<string, TensorRecord>> list, string prefix) => list.All(t => t.Key.StartsWith(prefix, StringComparison.Ordinal));
        static List<KeyValuePair<string, TensorRecord>> Strip(IEnumerable<KeyValuePair<string, TensorRecord>> list, string prefix) =>
            [.. list.Select(t => new KeyValuePair<string, TensorRecord>(t.Key[prefix.Length..], t.Value))];

        while (AllUnder(tensors, "module.")) tensors = Strip(tensors, "module.");
        bool wrapped = tensors.All(t => t.Key.StartsWith("backbone.", StringComparison.Ordinal) || t.Key.StartsWith("head.", StringComparison.Ordinal));
        if (wrapped && tensors.Any(t => t.Key.StartsWith("backbone.", StringComparison.Ordinal)))
        {
            leftOut.AddRange(tensors.Where(t => t.Key.StartsWith("head.", StringComparison.Ordinal)).Select(t => t.Key));
            tensors = Strip(tensors.Where(t => t.Key.StartsWith("backbone.", StringComparison.Ordinal)), "backbone.");
        }
        return tensors;
    }

    private static string KeyText(object? key) => key switch
    {
        string text => text,
        null => "None",
        _ => Convert.ToString(key, CultureInfo.InvariantCulture) ?? AdmittedGlobals.Describe(key),
    };

    private static string KeyList(PickleDict dict) => "[" + string.Join(", ", dict.Entries.Take(12).Select(e => KeyText(e.Key))) + (dict.Count > 12 ? ", …" : "") + "]";
}
