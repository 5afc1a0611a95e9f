using System.CommandLine;
using MimFlow.Torch.Backend;
using TorchSharp;

namespace MimFlow.Cli.Commands;

/// <summary>
/// <c>--device cpu|cuda</c>, the same on every command that computes. Left out, the request's own default applies
/// (null: the library's, CPU for training and whatever the command's record says).
/// </summary>
internal sealed class DeviceOption
{
    public Option<string?> Option { get; } = Create();

    private static Option<string?> Create()
    {
        var option = new Option<string?>("--device") { Description = "cpu or cuda (cuda needs the CUDA libtorch: MIMFLOW_LIBTORCH or --libtorch); default cpu" };
        option.AcceptOnlyFromAmong("cpu", "cuda");
        return option;
    }

    /// <summary>Loads the torch backend and resolves the device the user asked for; null when they asked for none.</summary>
    public torch.Device? Resolve(ParseResult parsed)
    {
        var backend = TorchBackend.EnsureLoaded(MimFlowCli.BackendOptions(parsed));
        return parsed.GetValue(Option) switch
        {
            null => null,
            "cuda" when backend.DefaultDevice.type != DeviceType.CUDA =>
                throw new ArgumentException("--device cuda needs the CUDA libtorch (MIMFLOW_LIBTORCH or --libtorch); this process runs the CPU build"),
            "cuda" => backend.DefaultDevice,
            _ => torch.CPU,
        };
    }
}
