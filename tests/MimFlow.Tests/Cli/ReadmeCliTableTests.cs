using System.CommandLine;
using System.Text.RegularExpressions;
using MimFlow.Cli;

namespace MimFlow.Tests.Cli;

/// <summary>The README's CLI table and the program agree: every command and option it names exists, and every command and option the program has is named.</summary>
public sealed partial class ReadmeCliTableTests
{
    private static readonly HashSet<string> Implicit = ["--help", "-h", "-?", "/?", "--version", "--libtorch"];

    /// <summary>Command path ("datasets synth") → the options its README rows name.</summary>
    private static Dictionary<string, HashSet<string>> ReadmeTable(Command root)
    {
        var table = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (string line in File.ReadLines(RepositoryFiles.PathOf("README.md")).Where(l => l.StartsWith("| `mimflow ", StringComparison.Ordinal)))
        {
            string cell = line.Split(" | ")[0];
            foreach (Match span in CodeSpan().Matches(cell))
            {
                string code = span.Groups[1].Value;
                if (!code.StartsWith("mimflow ", StringComparison.Ordinal)) continue;
                var command = root;
                var path = new List<string>();
                foreach (string token in code.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1))
                {
                    var sub = command.Subcommands.FirstOrDefault(c => c.Name == token);
                    if (sub is null) break;
                    command = sub;
                    path.Add(token);
                }
                Assert.True(path.Count > 0, $"README row names no command: {code}");
                string key = string.Join(' ', path);
                if (!table.TryGetValue(key, out var options)) table[key] = options = new HashSet<string>(StringComparer.Ordinal);
                foreach (Match option in OptionName().Matches(code)) options.Add(option.Value);
            }
        }
        return table;
    }

    private static IEnumerable<(string Path, Command Command)> Leaves(Command command, string path = "")
    {
        foreach (var sub in command.Subcommands)
        {
            string subPath = path.Length == 0 ? sub.Name : $"{path} {sub.Name}";
            if (sub.Action is not null) yield return (subPath, sub);
            foreach (var leaf in Leaves(sub, subPath)) yield return leaf;
        }
    }

    private static IEnumerable<string> OptionsOf(Command command) =>
        command.Options.Select(o => o.Name).Concat(command.Options.SelectMany(o => o.Aliases)).Where(n => n.StartsWith("--", StringComparison.Ordinal) && !Implicit.Contains(n));

    [Fact]
    public void Every_command_and_option_in_the_readme_table_exists_and_the_reverse()
    {
        var root = MimFlowCli.Build(new CliContext(Spectre.Console.AnsiConsole.Console, TextWriter.Null));
        var readme = ReadmeTable(root);
        var program = Leaves(root).ToDictionary(l => l.Path, l => OptionsOf(l.Command).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (path, options) in readme)
        {
            if (!program.TryGetValue(path, out var real)) { problems.Add($"README names 'mimflow {path}', which is not a command"); continue; }
            foreach (string option in options.Except(real)) problems.Add($"README gives 'mimflow {path}' the option {option}, which it does not have");
        }
        foreach (var (path, options) in program)
        {
            if (!readme.TryGetValue(path, out var named)) { problems.Add($"'mimflow {path}' is missing from the README's CLI table"); continue; }
            foreach (string option in options.Except(named)) problems.Add($"the README's row for 'mimflow {path}' does not name its option {option}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [GeneratedRegex("`([^`]+)`")]
    private static partial Regex CodeSpan();

    [GeneratedRegex(@"--[a-z0-9][a-z0-9-]*")]
    private static partial Regex OptionName();
}
