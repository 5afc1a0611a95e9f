using System.CommandLine;
using System.Globalization;
using System.Numerics;

namespace MimFlow.Cli.Commands;

/// <summary>
/// Bounds on option values, checked while parsing so a bad value is a usage error (exit 2) naming the option before
/// any work starts, not an exception deep inside the command (or, worse, a run that does the wrong thing).
/// </summary>
internal static class OptionChecks
{
    /// <summary>Refuses values outside [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<T> InRange<T>(this Option<T> option, T min, T max) where T : struct, INumber<T>
    {
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count == 0) return;
            T value = result.GetValueOrDefault<T>();
            if (value < min || value > max) result.AddError($"{option.Name} must be in {Show(min)}…{Show(max)} (got {Show(value)})");
        });
        return option;
    }

    /// <summary>The same for an optional value: absent is fine, present must be in range.</summary>
    public static Option<T?> InRange<T>(this Option<T?> option, T min, T max) where T : struct, INumber<T>
    {
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count == 0 || result.GetValueOrDefault<T?>() is not T value) return;
            if (value < min || value > max) result.AddError($"{option.Name} must be in {Show(min)}…{Show(max)} (got {Show(value)})");
        });
        return option;
    }

    /// <summary>Adds a check of a string option: <paramref name="problem"/> returns why the value is refused, or null.</summary>
    public static Option<string?> Check(this Option<string?> option, Func<string, string?> problem)
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string?>() is string value && problem(value) is string reason) result.AddError($"{option.Name} {reason}");
        });
        return option;
    }

    private static string Show<T>(T value) where T : INumber<T> =>
        T.IsInteger(value) ? string.Format(CultureInfo.InvariantCulture, "{0:N0}", value) : string.Format(CultureInfo.InvariantCulture, "{0}", value);
}
