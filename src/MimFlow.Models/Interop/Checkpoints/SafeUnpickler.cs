using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace MimFlow.Models.Interop.Checkpoints;

/// <summary>
/// A pickle reader that never runs anything: it implements the pickle machine's opcodes (protocols 0–5) over plain
/// data, resolves no global to code, and sends every call the pickle makes (REDUCE, INST, OBJ) to
/// <see cref="AdmittedGlobals"/>, which refuses what is not on its list. Class instantiation (NEWOBJ) and BUILD make
/// <see cref="InertObject"/>s. Lengths read from the input are checked against what is left before anything is
/// allocated, each opcode consumes input, and no step recurses, so a hostile pickle ends in an
/// <see cref="InvalidDataException"/>, not a hang, a crash or a huge allocation.
/// </summary>
internal sealed class SafeUnpickler
{
    private readonly string origin;
    private readonly Func<object?, object?> persistentLoad;
    private readonly CancellationToken cancellationToken;
    private readonly List<object?> stack = [];
    private readonly Stack<int> marks = new();
    private readonly Dictionary<long, object?> memo = new();
    private ReadOnlyMemory<byte> input;
    private int position;

    /// <param name="origin">Names the pickle in errors (the file, and the member for archives).</param>
    /// <param name="persistentLoad">Resolves a persistent id (torch.save's storage records) to a value.</param>
    public SafeUnpickler(string origin, Func<object?, object?> persistentLoad, CancellationToken cancellationToken = default)
    {
        this.origin = origin;
        this.persistentLoad = persistentLoad;
        this.cancellationToken = cancellationToken;
    }

    /// <summary>Reads one pickle from the start of <paramref name="data"/>; returns its value and the bytes it took (through STOP).</summary>
    public (object? Value, int Length) Load(ReadOnlyMemory<byte> data)
    {
        input = data;
        position = 0;
        stack.Clear();
        marks.Clear();
        memo.Clear();
        for (long steps = 0; ; steps++)
        {
            if ((steps & 0xFFFF) == 0) cancellationToken.ThrowIfCancellationRequested();
            int at = position;
            byte opcode = ReadByte();
            try
            {
                if (Step(opcode)) return (Pop(), position);
            }
            catch (PickleFormatException e)
            {
                throw new InvalidDataException($"{origin}: not a valid pickle: {e.Message} (opcode 0x{opcode:x2} at byte {at})");
            }
        }
    }

    /// <summary>Runs one opcode; true at STOP.</summary>
    private bool Step(byte opcode)
    {
        switch (opcode)
        {
            case (byte)'.': return true; // STOP
            case 0x80: // PROTO
                if (ReadByte() > 5) throw new PickleFormatException("protocol above 5");
                break;
            case 0x95: Take(8); break; // FRAME: framing is only a read-ahead hint
            case (byte)'(': marks.Push(stack.Count); break; // MARK
            case (byte)'0': Pop(); break; // POP
            case (byte)'1': PopMark(); break; // POP_MARK
            case (byte)'2': Push(Peek()); break; // DUP

            case (byte)'N': Push(null); break;
            case 0x88: Push(true); break; // NEWTRUE
            case 0x89: Push(false); break; // NEWFALSE
            case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
            case (byte)'K': Push((long)ReadByte()); break; // BININT1
            case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
            case 0x8a: Push(LittleEndianInteger(Take(ReadByte()))); break; // LONG1
            case 0x8b: Push(LittleEndianInteger(Take(Length(BinaryPrimitives.ReadInt32LittleEndian(Take(4)))))); break; // LONG4
            case (byte)'I': Push(TextInteger(ReadLine(), allowBool: true)); break; // INT
            case (byte)'L': Push(TextInteger(ReadLine().TrimEnd('L'), allowBool: false)); break; // LONG
            case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
            case (byte)'F': Push(TextFloat(ReadLine())); break; // FLOAT

            case (byte)'X': Push(Utf8(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break; // BINUNICODE
            case 0x8c: Push(Utf8(Take(ReadByte()))); break; // SHORT_BINUNICODE
            case 0x8d: Push(Utf8(Take(Length(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))))); break; // BINUNICODE8
            case (byte)'V': Push(RawUnicodeEscape(ReadLine())); break; // UNICODE
            case (byte)'T': Push(Python2String(Take(Length(BinaryPrimitives.ReadInt32LittleEndian(Take(4)))))); break; // BINSTRING
            case (byte)'U': Push(Python2String(Take(ReadByte()))); break; // SHORT_BINSTRING
            case (byte)'S': Push(QuotedString(ReadLine())); break; // STRING
            case (byte)'B': Push(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray()); break; // BINBYTES
            case (byte)'C': Push(Take(ReadByte()).ToArray()); break; // SHORT_BINBYTES
            case 0x8e: case 0x96: Push(Take(Length(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))).ToArray()); break; // BINBYTES8, BYTEARRAY8

            case (byte)')': Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
            case (byte)'t': Push(PopMark().ToArray()); break; // TUPLE
            case 0x85: Push(new[] { Pop() }); break; // TUPLE1
            case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; } // TUPLE2
            case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
            case (byte)']': Push(new PickleList()); break; // EMPTY_LIST
            case (byte)'l': { var list = new PickleList(); list.AddRange(PopMark()); Push(list); break; } // LIST
            case (byte)'a': { var item = Pop(); ListTarget(Peek(), "append").Add(item); break; } // APPEND
            case (byte)'e': { var items = PopMark(); ListTarget(Peek(), "extend").AddRange(items); break; } // APPENDS
            case (byte)'}': Push(new PickleDict()); break; // EMPTY_DICT
            case (byte)'d': Push(DictOf(PopMark())); break; // DICT
            case (byte)'s': { var value = Pop(); var key = Pop(); DictTarget(Peek()).Set(key, value); break; } // SETITEM
            case (byte)'u': { var items = PopMark(); var dict = DictTarget(Peek()); for (int i = 0; i + 1 < items.Count; i += 2) dict.Set(items[i], items[i + 1]); break; } // SETITEMS
            case 0x8f: Push(new PickleSet()); break; // EMPTY_SET
            case 0x90: { var items = PopMark(); SetTarget(Peek()).AddRange(items); break; } // ADDITEMS
            case 0x91: { var set = new PickleSet(); set.AddRange(PopMark()); Push(set); break; } // FROZENSET

            case (byte)'p': memo[ParseMemoKey(ReadLine())] = Peek(); break; // PUT
            case (byte)'q': memo[ReadByte()] = Peek(); break; // BINPUT
            case (byte)'r': memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek(); break; // LONG_BINPUT
            case 0x94: memo[memo.Count] = Peek(); break; // MEMOIZE
            case (byte)'g': Push(Recall(ParseMemoKey(ReadLine()))); break; // GET
            case (byte)'h': Push(Recall(ReadByte())); break; // BINGET
            case (byte)'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET

            case (byte)'c': { string module = ReadLine(); string name = ReadLine(); Push(PickleGlobal.Normalized(module, name)); break; } // GLOBAL
            case 0x93: { var name = Pop(); var module = Pop(); Push(PickleGlobal.Normalized(AsText(module, "module"), AsText(name, "name"))); break; } // STACK_GLOBAL
            case (byte)'R': { var arguments = AsTuple(Pop(), "REDUCE"); Push(AdmittedGlobals.Call(Pop(), arguments, origin)); break; } // REDUCE
            case (byte)'i': { string module = ReadLine(); string name = ReadLine(); Push(AdmittedGlobals.Call(PickleGlobal.Normalized(module, name), [.. PopMark()], origin)); break; } // INST
            case (byte)'o': { var items = PopMark(); if (items.Count == 0) throw new PickleFormatException("OBJ without a class"); Push(AdmittedGlobals.Call(items[0], [.. items.Skip(1)], origin)); break; } // OBJ
            case 0x81: { var arguments = AsTuple(Pop(), "NEWOBJ"); Push(AdmittedGlobals.New(Pop(), arguments, origin)); break; } // NEWOBJ
            case 0x92: { Pop(); var arguments = AsTuple(Pop(), "NEWOBJ_EX"); Push(AdmittedGlobals.New(Pop(), arguments, origin)); break; } // NEWOBJ_EX (keyword arguments are not needed by an inert object)
            case (byte)'b': { var state = Pop(); AdmittedGlobals.Build(Peek(), state, origin); break; } // BUILD
            case (byte)'P': Push(persistentLoad(ReadLine())); break; // PERSID
            case (byte)'Q': Push(persistentLoad(Pop())); break; // BINPERSID

            case 0x82: case 0x83: case 0x84:
                throw AdmittedGlobals.Refusal(origin, "an object from the copyreg extension registry (EXT opcodes)");
            case 0x97: case 0x98:
                throw new PickleFormatException("out-of-band buffers (protocol 5) are not part of a checkpoint");
            default:
                throw new PickleFormatException($"unknown opcode 0x{opcode:x2}");
        }
        return false;
    }

    private void Push(object? value) => stack.Add(value);

    private object? Pop()
    {
        if (stack.Count == 0 || (marks.Count > 0 && marks.Peek() == stack.Count)) throw new PickleFormatException("the stack is empty");
        var value = stack[^1];
        stack.RemoveAt(stack.Count - 1);
        return value;
    }

    private object? Peek() => stack.Count == 0 || (marks.Count > 0 && marks.Peek() == stack.Count) ? throw new PickleFormatException("the stack is empty") : stack[^1];

    private List<object?> PopMark()
    {
        if (marks.Count == 0) throw new PickleFormatException("no MARK to pop to");
        int mark = marks.Pop();
        var items = stack.GetRange(mark, stack.Count - mark);
        stack.RemoveRange(mark, stack.Count - mark);
        return items;
    }

    private object? Recall(long key) => memo.TryGetValue(key, out var value) ? value : throw new PickleFormatException($"memo entry {key} was never stored");

    // Python calls the target's append/extend/__setitem__/add here. Containers and inert instances (subclasses of
    // dict or list, such as an EasyDict of arguments) take the items as data; anything else would need class code.
    private List<object?> ListTarget(object? target, string method) => target switch
    {
        PickleList list => list,
        InertObject inert => inert.ListItems,
        _ => throw AdmittedGlobals.Refusal(origin, $"{Describe(target)}.{method}"),
    };

    private PickleDict DictTarget(object? target) => target switch
    {
        PickleDict dict => dict,
        InertObject inert => inert.DictItems,
        _ => throw AdmittedGlobals.Refusal(origin, $"{Describe(target)}.__setitem__"),
    };

    private List<object?> SetTarget(object? target) => target switch
    {
        PickleSet set => set,
        InertObject inert => inert.ListItems,
        _ => throw AdmittedGlobals.Refusal(origin, $"{Describe(target)}.add"),
    };

    private static string Describe(object? value) => value switch
    {
        InertObject inert => inert.Type.ToString(),
        PickleGlobal global => global.ToString(),
        null => "None",
        _ => value.GetType().Name,
    };

    private static PickleDict DictOf(List<object?> items)
    {
        if (items.Count % 2 != 0) throw new PickleFormatException("DICT with an odd number of items");
        var dict = new PickleDict();
        for (int i = 0; i < items.Count; i += 2) dict.Set(items[i], items[i + 1]);
        return dict;
    }

    private static object?[] AsTuple(object? value, string opcode) => value switch
    {
        object?[] tuple => tuple,
        PickleList list => [.. list],
        _ => throw new PickleFormatException($"{opcode} arguments are a {Describe(value)}, not a tuple"),
    };

    private static string AsText(object? value, string what) => value as string ?? throw new PickleFormatException($"STACK_GLOBAL {what} is not a string");

    private byte ReadByte()
    {
        if (position >= input.Length) throw new InvalidDataException($"{origin}: not a valid pickle: it ends at byte {position} before its STOP opcode (truncated?)");
        return input.Span[position++];
    }

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || count > input.Length - position)
            throw new InvalidDataException($"{origin}: not a valid pickle: a {count}-byte field at byte {position} runs past its end ({input.Length} bytes; truncated?)");
        var span = input.Span.Slice(position, count);
        position += count;
        return span;
    }

    /// <summary>A length field, which must fit in what is left of the input (so nothing large is allocated on its word).</summary>
    private int Length(long length) => length < 0 || length > input.Length - position
        ? throw new InvalidDataException($"{origin}: not a valid pickle: a length of {length} at byte {position} runs past its end ({input.Length} bytes; truncated?)")
        : (int)length;

    private int Length(ulong length) => Length(length > long.MaxValue ? -1 : (long)length);

    private string ReadLine()
    {
        var rest = input.Span[position..];
        int end = rest.IndexOf((byte)'\n');
        if (end < 0) throw new InvalidDataException($"{origin}: not a valid pickle: a text field at byte {position} has no end of line (truncated?)");
        position += end + 1;
        return Encoding.Latin1.GetString(rest[..end]);
    }

    private static long ParseMemoKey(string text) => long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long key) ? key : throw new PickleFormatException($"memo key '{text}' is not a number");

    private static object LittleEndianInteger(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0) return 0L;
        if (bytes.Length <= 8)
        {
            long value = 0;
            for (int i = bytes.Length - 1; i >= 0; i--) value = (value << 8) | bytes[i];
            int unused = 64 - 8 * bytes.Length;
            return unused == 0 ? value : (value << unused) >> unused; // sign-extends the top byte
        }
        var big = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
        return big >= long.MinValue && big <= long.MaxValue ? (long)big : big;
    }

    private static object TextInteger(string text, bool allowBool)
    {
        if (allowBool && text == "01") return true;
        if (allowBool && text == "00") return false;
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value)) return value;
        return BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var big) ? big : throw new PickleFormatException($"'{text}' is not an integer");
    }

    private static double TextFloat(string text) => text switch
    {
        "inf" => double.PositiveInfinity,
        "-inf" => double.NegativeInfinity,
        "nan" => double.NaN,
        _ => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) ? value : throw new PickleFormatException($"'{text}' is not a float"),
    };

    private static string Utf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new PickleFormatException("a string is not valid UTF-8");
        }
    }

    /// <summary>Python 2 <c>str</c>: torch.load decodes it as UTF-8; bytes that are not UTF-8 are taken as Latin-1.</summary>
    private static string Python2String(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return Encoding.Latin1.GetString(bytes);
        }
    }

    /// <summary>Protocol 0's STRING: a Python repr in single or double quotes, with backslash escapes.</summary>
    private static string QuotedString(string text)
    {
        if (text.Length < 2 || text[0] != text[^1] || text[0] is not ('\'' or '"')) throw new PickleFormatException("STRING is not quoted");
        return Unescape(text[1..^1]);
    }

    /// <summary>Protocol 0's UNICODE: raw-unicode-escape, where only \uXXXX and \UXXXXXXXX are escapes.</summary>
    private static string RawUnicodeEscape(string text)
    {
        var result = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] == '\\' && i + 1 < text.Length && text[i + 1] is 'u' or 'U')
            {
                int digits = text[i + 1] == 'u' ? 4 : 8;
                if (i + 2 + digits > text.Length || !int.TryParse(text.AsSpan(i + 2, digits), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code)
                    || code > 0x10FFFF || code is >= 0xD800 and <= 0xDFFF)
                    throw new PickleFormatException("a bad \\u escape in UNICODE");
                result.Append(char.ConvertFromUtf32(code));
                i += 1 + digits;
            }
            else result.Append(text[i]);
        }
        return result.ToString();
    }

    /// <summary>Python's string escapes; an unknown one stays as written, as Python 2 keeps it.</summary>
    private static string Unescape(string text)
    {
        var result = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c != '\\' || i + 1 == text.Length)
            {
                result.Append(c);
                continue;
            }
            char next = text[++i];
            switch (next)
            {
                case 'n': result.Append('\n'); break;
                case 't': result.Append('\t'); break;
                case 'r': result.Append('\r'); break;
                case '\\': case '\'': case '"': result.Append(next); break;
                case 'x' when i + 2 < text.Length && int.TryParse(text.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code):
                    result.Append((char)code);
                    i += 2;
                    break;
                default:
                    result.Append('\\').Append(next);
                    break;
            }
        }
        return result.ToString();
    }
}

/// <summary>A malformed pickle; the reader adds the file and the position.</summary>
internal sealed class PickleFormatException(string message) : Exception(message);
