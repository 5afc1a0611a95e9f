using System.Diagnostics;

namespace MimFlow.Tests.Ops;

/// <summary>
/// The operator scripts run what the repository ships (ops/package.sh's release, its container image), never a packer
/// outside it, and parse as shell. Building and running the release and the .NET tool is a CI step (.ci/run), not a
/// test: each packs libtorch and takes minutes.
/// </summary>
public sealed class OpsScriptsTests
{
    private static IEnumerable<string> OpsFiles(params string[] patterns) =>
        patterns.SelectMany(p => Directory.EnumerateFiles(RepositoryFiles.PathOf("ops"), p, SearchOption.AllDirectories)).Order(StringComparer.Ordinal);

    [Fact]
    public void The_gpu_route_and_the_cluster_examples_use_the_repositorys_release_and_image()
    {
        string[] outside = ["shared/gpu", "remote.sh", "pack.sh", "mimflow:latest"];
        var files = OpsFiles("*.sh", "*.slurm", "*.yaml", "*.md", "Dockerfile").Append(RepositoryFiles.PathOf("README.md")).ToList();
        Assert.Contains(files, f => f.EndsWith("pretrain-mpijob.yaml", StringComparison.Ordinal));
        foreach (string file in files)
        {
            string text = File.ReadAllText(file);
            foreach (string name in outside)
                Assert.False(text.Replace("ops/package.sh", "", StringComparison.Ordinal).Contains(name, StringComparison.Ordinal), $"{file} still names {name}");
        }
        foreach (string file in OpsFiles("*.slurm", "pretrain-8gpu.sh"))
            Assert.Contains("/mimflow/mimflow}", File.ReadAllText(file));
        foreach (string file in OpsFiles("*.yaml"))
            Assert.Contains("ops/container/Dockerfile", File.ReadAllText(file));
    }

    [SkippableFact]
    public void Every_ops_shell_script_parses()
    {
        Skip.If(!File.Exists("/bin/bash"), "no /bin/bash on this machine");
        foreach (string file in OpsFiles("*.sh", "*.slurm").Append(RepositoryFiles.PathOf(".ci", "run")))
        {
            using var bash = Process.Start(new ProcessStartInfo("/bin/bash", ["-n", file]) { RedirectStandardError = true })!;
            string errors = bash.StandardError.ReadToEnd();
            bash.WaitForExit();
            Assert.True(bash.ExitCode == 0, $"{file}: {errors}");
        }
    }
}
