using Spectre.Console;

namespace MimFlow.Cli;

/// <summary>
/// The console a command writes to. In a terminal, Spectre's own (colours, live progress, tables fitted to the
/// window). Redirected (a batch job's log, a pipe), plain: no ANSI codes, ASCII borders, and a width no table needs
/// to wrap at, so a row stays one line a log reader or grep can use.
/// </summary>
public static class CliConsole
{
    /// <summary>Wide enough for any table MimFlow prints (the pipeline plan's command lines are the longest).</summary>
    public const int RedirectedWidth = 4000;

    public static IAnsiConsole ForProcess() => Console.IsOutputRedirected ? Plain(Console.Out) : AnsiConsole.Console;

    public static IAnsiConsole Plain(TextWriter output)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        console.Profile.Width = RedirectedWidth;
        console.Pipeline.Attach(new PlainTables());
        return console;
    }

    /// <summary>Tables drawn with ASCII borders and without the title's padding to the table's width.</summary>
    private sealed class PlainTables : Spectre.Console.Rendering.IRenderHook
    {
        public IEnumerable<Spectre.Console.Rendering.IRenderable> Process(Spectre.Console.Rendering.RenderOptions options, IEnumerable<Spectre.Console.Rendering.IRenderable> renderables)
        {
            foreach (var renderable in renderables)
            {
                if (renderable is Table table) table.Border(TableBorder.Ascii);
                yield return renderable;
            }
        }
    }
}
