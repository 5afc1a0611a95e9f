namespace MimFlow.Tests.Torch;

/// <summary>The native files the build copies next to the tests.</summary>
internal static class TorchNativeFiles
{
    public static string Bridge
    {
        get
        {
            string[] candidates =
            [
                Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
                Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"),
            ];
            return candidates.FirstOrDefault(File.Exists)
                ?? throw new FileNotFoundException("libLibTorchSharp.so is not in the test output; rebuild.", candidates[0]);
        }
    }
}
