using System.Diagnostics;
using System.Text.RegularExpressions;
using MimFlow.Cli;

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

    /// <summary>Every mimflow command line in the cluster examples, with shell variables given a value.</summary>
    private static IEnumerable<(string File, string[] Args)> ClusterCommands()
    {
        foreach (string file in OpsFiles("*.slurm", "*.sh", "*.yaml").Where(f => f.Contains("/cluster/", StringComparison.Ordinal)))
        {
            var lines = File.ReadAllLines(file);
            if (file.EndsWith(".yaml", StringComparison.Ordinal))
            {
                for (int i = 0; i < lines.Length; i++)
                {
                    string line = lines[i].Trim();
                    int indent = lines[i].Length - lines[i].TrimStart().Length;
                    var words = new List<string>();
                    if (line == "- mimflow")
                    {
                        // A command list: its items follow at the same indentation.
                        for (int j = i + 1; j < lines.Length && lines[j].Length - lines[j].TrimStart().Length == indent && lines[j].TrimStart().StartsWith("- ", StringComparison.Ordinal); j++)
                            words.Add(lines[j].Trim()[2..].Trim().Trim('"'));
                        yield return (file, words.ToArray());
                    }
                    else if (line.StartsWith("mimflow ", StringComparison.Ordinal))
                    {
                        // A folded shell line (sh -c): it goes on at the same indentation.
                        var text = new System.Text.StringBuilder(line["mimflow ".Length..]);
                        for (int j = i + 1; j < lines.Length && lines[j].Trim().Length > 0 && lines[j].Length - lines[j].TrimStart().Length == indent; j++)
                            text.Append(' ').Append(lines[j].Trim());
                        yield return (file, ShellWords(text.ToString()));
                    }
                }
            }
            else
            {
                string joined = string.Join('\n', lines.Where(l => !l.TrimStart().StartsWith('#'))).Replace("\\\n", " ", StringComparison.Ordinal);
                foreach (string line in joined.Split('\n'))
                {
                    int at = line.IndexOf("\"$mimflow\" ", StringComparison.Ordinal);
                    if (at >= 0) yield return (file, ShellWords(line[(at + "\"$mimflow\" ".Length)..]));
                }
            }
        }
    }

    private static string[] ShellWords(string text)
    {
        string expanded = Regex.Replace(text, @"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "1");
        return Regex.Matches(expanded, "\"([^\"]*)\"|'([^']*)'|(\\S+)").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Success ? m.Groups[2].Value : m.Groups[3].Value).ToArray();
    }

    [Fact]
    public void The_cluster_examples_command_lines_parse_with_this_mimflow()
    {
        var commands = ClusterCommands().ToList();
        // Both Slurm scripts, the 8-GPU script and both Kubernetes jobs, each with its command.
        Assert.Equal(5, commands.Select(c => c.File).Distinct().Count());
        var context = new CliContext(CliConsole.Plain(new StringWriter()), new StringWriter());
        foreach (var (file, args) in commands)
        {
            Assert.True(args.Length > 4, $"{file}: {string.Join(' ', args)}");
            var parsed = MimFlowCli.Build(context).Parse(args);
            Assert.True(parsed.Errors.Count == 0, $"{file}: mimflow {string.Join(' ', args)}: {string.Join("; ", parsed.Errors.Select(e => e.Message))}");
        }
        // Long jobs report to their log at a stated interval, and pretraining serves its gauges to Prometheus.
        Assert.All(commands, c => Assert.Contains("--progress-interval", c.Args));
        Assert.All(commands.Where(c => c.Args[0] == "pretrain"), c => Assert.Contains("--metrics-port", c.Args));
    }
}
