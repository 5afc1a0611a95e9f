namespace MimFlow.Torch.Elf;

/// <summary>The file is not an ELF image this reader understands, or its structures point outside the file.</summary>
public sealed class ElfFormatException(string path, string reason)
    : Exception($"{path}: not a readable ELF64 little-endian file: {reason}")
{
    public string Path { get; } = path;
    public string Reason { get; } = reason;
}
