using System.Collections.Frozen;
using System.Numerics;
using System.Text;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>
/// The security policy of the checkpoint reader, in one place. In Python, unpickling calls whatever global the
/// pickle names with whatever arguments it gives (REDUCE, INST, OBJ): that is how a checkpoint runs
/// <c>os.system</c>. Here a call is answered only for the globals listed below, each by a C# function that builds
/// plain data from its arguments — nothing is imported, resolved or executed. Any other call is refused with one
/// line naming the global. Class instantiation without a call (NEWOBJ, <c>copyreg.__newobj__</c>,
/// <c>copyreg._reconstructor(cls, object, None)</c>) and BUILD make an <see cref="InertObject"/>: the class name
/// and the data its <c>__new__</c> and <c>__setstate__</c> would have received, never the class itself. The
/// list is in docs/model-interop.md ("Checkpoint files").
/// </summary>
internal static class AdmittedGlobals
{
    /// <summary>Globals a call to which is answered, with what the answer is (for the docs and the tests).</summary>
    public static FrozenDictionary<string, string> Calls { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["torch._utils._rebuild_tensor"] = "a tensor record (storage, offset, sizes, strides)",
        ["torch._utils._rebuild_tensor_v2"] = "a tensor record (storage, offset, sizes, strides; requires_grad and hooks ignored)",
        ["torch._utils._rebuild_tensor_v3"] = "a tensor record with an explicit dtype",
        ["torch._utils._rebuild_parameter"] = "the parameter's tensor record",
        ["torch._utils._rebuild_parameter_with_state"] = "the parameter's tensor record (its Python state ignored)",
        ["torch._tensor._rebuild_from_type_v2"] = "the tensor record of one of the tensor rebuilds above (the subclass and its state ignored)",
        ["collections.OrderedDict"] = "a dict",
        ["builtins.set"] = "a set",
        ["builtins.frozenset"] = "a set",
        ["builtins.bytearray"] = "bytes",
        ["_codecs.encode"] = "bytes (protocol 2 writes bytes as _codecs.encode(text, 'latin1'))",
        ["torch.Size"] = "a tuple",
        ["torch.device"] = "an opaque value",
        ["torch.jit._pickle.build_intlist"] = "its list (TorchScript)",
        ["torch.jit._pickle.build_doublelist"] = "its list (TorchScript)",
        ["torch.jit._pickle.build_boollist"] = "its list (TorchScript)",
        ["torch.jit._pickle.build_tensorlist"] = "its list (TorchScript)",
        ["torch.jit._pickle.build_genericlist"] = "its list (TorchScript)",
        ["torch.jit._pickle.restore_type_tag"] = "its value (TorchScript)",
        ["copyreg._reconstructor"] = "an inert object, only with base builtins.object and no state",
        ["copyreg.__newobj__"] = "an inert object (as NEWOBJ)",
        ["copyreg.__newobj_ex__"] = "an inert object (as NEWOBJ_EX)",
        ["numpy.core.multiarray.scalar"] = "an opaque value (NumPy scalars in training metadata)",
        ["numpy._core.multiarray.scalar"] = "an opaque value",
        ["numpy.core.multiarray._reconstruct"] = "an opaque value (NumPy arrays in training metadata)",
        ["numpy._core.multiarray._reconstruct"] = "an opaque value",
        ["numpy.dtype"] = "an opaque value",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenSet<string> TensorRebuilds = new[]
    {
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    }.ToFrozenSet(StringComparer.Ordinal);

    public static InvalidDataException Refusal(string origin, string callee) =>
        new($"{origin}: refused to load: the pickle calls {callee}, which is not a tensor or container type");

    /// <summary>REDUCE / INST / OBJ: <paramref name="callee"/>(*<paramref name="arguments"/>).</summary>
    public static object? Call(object? callee, object?[] arguments, string origin)
    {
        if (callee is not PickleGlobal function) throw Refusal(origin, $"a {Describe(callee)} (not a global function)");
        string name = function.ToString();
        switch (name)
        {
            case "torch._utils._rebuild_tensor":
            case "torch._utils._rebuild_tensor_v2":
                Expect(arguments, name, 4, 7);
                return RebuildTensor(arguments, null, origin);
            case "torch._utils._rebuild_tensor_v3":
                Expect(arguments, name, 7, 8);
                return RebuildTensor(arguments, arguments[6], origin);
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                Expect(arguments, name, 3, 4);
                return arguments[0] as TensorRecord ?? throw new PickleFormatException($"{name} of a {Describe(arguments[0])}, not a tensor");
            case "torch._tensor._rebuild_from_type_v2":
                {
                    Expect(arguments, name, 4, 4);
                    // Only the direct rebuilds: nesting this call inside itself would let a pickle drive recursion.
                    if (arguments[0] is not PickleGlobal inner || !TensorRebuilds.Contains(inner.ToString())) throw Refusal(origin, $"{Describe(arguments[0])} through {name}");
                    var innerArguments = arguments[2] as object?[] ?? throw new PickleFormatException($"{name} with arguments that are not a tuple");
                    return Call(inner, innerArguments, origin);
                }
            case "collections.OrderedDict":
                return DictFrom(arguments, name);
            case "builtins.set":
            case "builtins.frozenset":
                {
                    Expect(arguments, name, 0, 1);
                    var set = new PickleSet();
                    if (arguments.Length == 1) set.AddRange(Items(arguments[0], name));
                    return set;
                }
            case "builtins.bytearray":
                Expect(arguments, name, 0, 2);
                return arguments.Length == 0 ? Array.Empty<byte>() : arguments[0] switch
                {
                    byte[] bytes => bytes,
                    string text => Encoding.Latin1.GetBytes(text),
                    _ => throw new PickleFormatException($"{name} of a {Describe(arguments[0])}"),
                };
            case "_codecs.encode":
                Expect(arguments, name, 1, 2);
                return arguments[0] is string latin1 ? Encoding.Latin1.GetBytes(latin1) : throw new PickleFormatException($"{name} of a {Describe(arguments[0])}");
            case "torch.Size":
                Expect(arguments, name, 0, 1);
                return arguments.Length == 0 ? Array.Empty<object?>() : [.. Items(arguments[0], name)];
            case "torch.device":
                return new OpaqueValue($"torch.device({string.Join(", ", arguments)})");
            case "torch.jit._pickle.build_intlist":
            case "torch.jit._pickle.build_doublelist":
            case "torch.jit._pickle.build_boollist":
            case "torch.jit._pickle.build_tensorlist":
            case "torch.jit._pickle.build_genericlist":
                Expect(arguments, name, 1, 1);
                return arguments[0];
            case "torch.jit._pickle.restore_type_tag":
                Expect(arguments, name, 2, 2);
                return arguments[0];
            case "copyreg._reconstructor":
                Expect(arguments, name, 3, 3);
                // _reconstructor(cls, base, state) runs base.__new__ and base.__init__: harmless only for object.
                if (arguments[1] is not PickleGlobal { Module: "builtins", Name: "object" } || arguments[2] is not null)
                    throw Refusal(origin, $"{name} with base {Describe(arguments[1])}");
                return New(arguments[0], [], origin);
            case "copyreg.__newobj__":
                if (arguments.Length == 0) throw new PickleFormatException($"{name} without a class");
                return New(arguments[0], arguments[1..], origin);
            case "copyreg.__newobj_ex__":
                Expect(arguments, name, 3, 3);
                return New(arguments[0], arguments[1] as object?[] ?? [], origin);
            case "numpy.core.multiarray.scalar":
            case "numpy._core.multiarray.scalar":
            case "numpy.core.multiarray._reconstruct":
            case "numpy._core.multiarray._reconstruct":
            case "numpy.dtype":
                return new OpaqueValue($"a NumPy value ({name})");
        }
        if (name.StartsWith("torch._utils._rebuild_", StringComparison.Ordinal))
            throw new InvalidDataException($"{origin}: holds a tensor rebuilt by {name} (quantised, sparse, meta, nested or device-specific), which MimFlow does not read");
        throw Refusal(origin, name);
    }

    /// <summary>NEWOBJ: <c>cls.__new__(cls, *args)</c>, which makes an instance without running <c>__init__</c>; here an inert record of it.</summary>
    public static object New(object? type, object?[] arguments, string origin) => type switch
    {
        PickleGlobal { Module: "collections", Name: "OrderedDict" } or PickleGlobal { Module: "builtins", Name: "dict" } => new PickleDict(),
        PickleGlobal { Module: "builtins", Name: "set" or "frozenset" } => new PickleSet(),
        PickleGlobal { Module: "builtins", Name: "list" } => new PickleList(),
        PickleGlobal global => new InertObject(global, arguments),
        _ => throw Refusal(origin, $"a {Describe(type)} as a class"),
    };

    /// <summary>BUILD: Python would call <c>__setstate__</c> or update <c>__dict__</c>; here the state is kept as data.</summary>
    public static void Build(object? target, object? state, string origin)
    {
        switch (target)
        {
            case InertObject inert:
                if (inert.State is PickleDict existing && state is PickleDict more)
                    foreach (var (key, value) in more.Entries) existing.Set(key, value);
                else inert.State = state;
                break;
            case PickleDict dict:
                dict.Attributes = state;
                break;
            case TensorRecord or OpaqueValue:
                break;
            default:
                throw Refusal(origin, $"{Describe(target)}.__setstate__");
        }
    }

    private static TensorRecord RebuildTensor(object?[] arguments, object? dtype, string origin)
    {
        var storage = arguments[0] as StorageReference ?? throw new PickleFormatException($"a tensor whose storage is a {Describe(arguments[0])}, not a persistent storage record");
        long offset = Integer(arguments[1], "storage offset");
        long[] shape = [.. Items(arguments[2], "tensor sizes").Select(size => Integer(size, "size"))];
        long[] stride = [.. Items(arguments[3], "tensor strides").Select(step => Integer(step, "stride"))];
        var elementType = storage.ElementType;
        if (dtype is not null)
            elementType = (dtype is PickleGlobal { Module: "torch" } named ? TorchElementType.OfDType(named.Name) : null)
                ?? throw new PickleFormatException($"a tensor of dtype {Describe(dtype)}");
        var record = TensorRecord.Create(storage, elementType, offset, shape, stride, out string? problem);
        if (problem is not null) throw new InvalidDataException($"{origin}: a tensor does not fit its storage: {problem}");
        return record;
    }

    private static PickleDict DictFrom(object?[] arguments, string name)
    {
        Expect(arguments, name, 0, 1);
        var dict = new PickleDict();
        if (arguments.Length == 0) return dict;
        if (arguments[0] is PickleDict source)
        {
            foreach (var (key, value) in source.Entries) dict.Set(key, value);
            return dict;
        }
        foreach (var pair in Items(arguments[0], name))
        {
            var items = pair as IReadOnlyList<object?> ?? throw new PickleFormatException($"{name} of an item that is not a pair");
            if (items.Count != 2) throw new PickleFormatException($"{name} of an item that is not a pair");
            dict.Set(items[0], items[1]);
        }
        return dict;
    }

    private static IReadOnlyList<object?> Items(object? value, string what) => value switch
    {
        object?[] tuple => tuple,
        PickleList list => list,
        PickleSet set => set,
        _ => throw new PickleFormatException($"{what} are a {Describe(value)}, not a sequence"),
    };

    private static long Integer(object? value, string what) => value switch
    {
        long number => number,
        bool flag => flag ? 1 : 0,
        BigInteger => throw new PickleFormatException($"a {what} beyond 64 bits"),
        _ => throw new PickleFormatException($"a {what} that is a {Describe(value)}, not an integer"),
    };

    private static void Expect(object?[] arguments, string name, int least, int most)
    {
        if (arguments.Length < least || arguments.Length > most)
            throw new PickleFormatException($"{name} with {arguments.Length} arguments ({least}–{most} expected)");
    }

    internal static string Describe(object? value) => value switch
    {
        null => "None",
        PickleGlobal global => global.ToString(),
        InertObject inert => $"{inert.Type} object",
        string => "string",
        long or BigInteger => "integer",
        object?[] => "tuple",
        PickleList => "list",
        PickleDict => "dict",
        TensorRecord => "tensor",
        _ => value.GetType().Name,
    };
}
