using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Torch.Diagnostics;

/// <param name="Device">Where the check ran, e.g. <c>cpu</c> or <c>cuda:0</c>.</param>
/// <param name="MatmulMaxAbsError">Largest difference between the device's matmul and a float64 CPU reference.</param>
/// <param name="GradientMaxAbsError">Largest difference between autograd's gradient and the closed form.</param>
public sealed record SelfTestResult(string Device, double MatmulMaxAbsError, double GradientMaxAbsError, TimeSpan Elapsed)
{
    /// <summary>float32 on 64-long dot products stays far below this; a broken kernel or transfer does not.</summary>
    public const double Tolerance = 1e-3;

    public bool Passed => MatmulMaxAbsError < Tolerance && GradientMaxAbsError < Tolerance;
}

/// <summary>
/// Proves a device computes correctly: a matmul checked against float64 on the CPU, and autograd's gradient of
/// sum((X·W)²) checked against its closed form 2·Xᵀ·(X·W).
/// </summary>
public static class BackendSelfTest
{
    public static SelfTestResult Run(Device device, long seed = 0)
    {
        var watch = Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)seed);
        var x = rand(64, 64, dtype: float64, generator: generator) - 0.5;
        var w = rand(64, 64, dtype: float64, generator: generator) - 0.5;

        var product = x.to(float32).to(device).matmul(w.to(float32).to(device));
        double matmulError = (product.to(CPU).to(float64) - x.matmul(w)).abs().max().item<double>();

        var xDevice = x.to(float32).to(device);
        var wDevice = w.to(float32).to(device).requires_grad_(true);
        var loss = xDevice.matmul(wDevice).pow(2).sum();
        loss.backward();
        var expected = 2 * x.t().matmul(x.matmul(w));
        double gradientError = (wDevice.grad!.to(CPU).to(float64) - expected).abs().max().item<double>();
        if (device.type == DeviceType.CUDA) cuda.synchronize();

        return new SelfTestResult(device.ToString(), matmulError, gradientError, watch.Elapsed);
    }
}
