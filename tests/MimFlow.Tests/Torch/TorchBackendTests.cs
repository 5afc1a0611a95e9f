using MimFlow.Torch.Backend;
using MimFlow.Torch.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MimFlow.Tests.Torch;

public sealed class TorchBackendTests
{
    [Fact]
    public void Tensor_op_runs_on_cpu_through_the_bootstrap()
    {
        var info = TorchBackend.EnsureLoaded();
        Assert.Equal(TorchRoute.Cpu, info.Route);
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        var product = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, product.data<float>().ToArray());
    }

    [Fact]
    public void Autograd_backward_gives_the_analytic_gradient()
    {
        TorchBackend.EnsureLoaded();
        using var scope = NewDisposeScope();
        var x = tensor(new double[] { 0.5, -1.5, 2.0 }).requires_grad_(true);
        var y = (x.pow(3) + 2 * x).sum();
        y.backward();
        double[] expected = [3 * 0.25 + 2, 3 * 2.25 + 2, 3 * 4.0 + 2];
        Assert.Equal(expected, x.grad!.data<double>().ToArray());
    }

    [Fact]
    public void Self_test_passes_on_cpu_and_would_flag_a_wrong_result()
    {
        TorchBackend.EnsureLoaded();
        var result = BackendSelfTest.Run(CPU, seed: 3);
        Assert.True(result.Passed, $"matmul error {result.MatmulMaxAbsError}, gradient error {result.GradientMaxAbsError}");
        Assert.False(result with { GradientMaxAbsError = 0.5 } is { Passed: true });
    }
}
