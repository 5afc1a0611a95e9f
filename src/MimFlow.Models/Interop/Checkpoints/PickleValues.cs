namespace MimFlow.Models.Interop.Checkpoints;

// What the safe unpickler builds. Python values map to: None → null, bool, long (BigInteger beyond 64 bits),
// double, string, byte[] (bytes), object?[] (tuple), PickleList, PickleDict, PickleSet, and the three below.
// None of these can run anything: a global is a name, an instance is its class name plus the data it was given.

/// <summary>A global as the pickle names it (<c>module.name</c>); never imported or resolved to anything that runs.</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    /// <summary>Python 2 spellings (protocol 2 writes them for Python 2 readers) under their Python 3 names.</summary>
    public static PickleGlobal Normalized(string module, string name) => new(module switch
    {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        _ => module,
    }, name);

    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>
/// An instance made without running its class: what NEWOBJ (<c>cls.__new__(cls, *args)</c>) and
/// <c>copyreg._reconstructor(cls, object, None)</c> would create, with the state BUILD would hand to
/// <c>__setstate__</c> kept as data. An nn.Module's state is its <c>__dict__</c> (<c>_parameters</c>,
/// <c>_buffers</c>, <c>_modules</c>, …); a TorchScript object's state is its attributes.
/// </summary>
internal sealed class InertObject(PickleGlobal type, IReadOnlyList<object?> arguments)
{
    public PickleGlobal Type { get; } = type;

    public IReadOnlyList<object?> Arguments { get; } = arguments;

    public object? State { get; set; }

    public PickleDict? StateDict => State as PickleDict;

    /// <summary>Items SETITEMS gave a dict subclass (e.g. an EasyDict in <c>args</c>), kept as data instead of calling its <c>__setitem__</c>.</summary>
    public PickleDict DictItems => dictItems ??= new PickleDict();

    /// <summary>Items APPENDS or ADDITEMS gave a list or set subclass, kept as data instead of calling its methods.</summary>
    public PickleList ListItems => listItems ??= new PickleList();

    public bool HasDictItems => dictItems is { Count: > 0 };

    private PickleDict? dictItems;
    private PickleList? listItems;

    public override string ToString() => Type.ToString();
}

/// <summary>A value that is kept only to be reported as left out (torch.device, NumPy scalars and arrays).</summary>
internal sealed record OpaqueValue(string Description)
{
    public override string ToString() => Description;
}

internal sealed class PickleList : List<object?>;

internal sealed class PickleSet : List<object?>;

/// <summary>A dict or OrderedDict: entries in insertion order (a repeated key keeps its first place, as in Python).</summary>
internal sealed class PickleDict
{
    private readonly List<KeyValuePair<object?, object?>> entries = [];
    private readonly Dictionary<object, int> positions = new();

    public int Count => entries.Count;

    public IReadOnlyList<KeyValuePair<object?, object?>> Entries => entries;

    /// <summary>What BUILD gave the dict (an OrderedDict's <c>_metadata</c> attribute), kept apart from the entries.</summary>
    public object? Attributes { get; set; }

    public void Set(object? key, object? value)
    {
        // Only hashable scalars can be looked up; other keys (tuples) are appended, as no caller looks them up.
        if (key is string or long or bool or double or System.Numerics.BigInteger && positions.TryGetValue(key, out int at))
        {
            entries[at] = new(key, value);
            return;
        }
        if (key is string or long or bool or double or System.Numerics.BigInteger) positions[key] = entries.Count;
        entries.Add(new(key, value));
    }

    public bool TryGet(string key, out object? value)
    {
        if (positions.TryGetValue(key, out int at))
        {
            value = entries[at].Value;
            return true;
        }
        value = null;
        return false;
    }

    public object? this[string key] => TryGet(key, out var value) ? value : null;
}
