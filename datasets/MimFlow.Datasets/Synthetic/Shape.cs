namespace MimFlow.Datasets.Synthetic;

public enum ShapeKind { Disc, Square, Triangle, Ring, Cross, Star, Diamond }

/// <summary>
/// A filled shape in pixel space: a unit shape in (u, v), scaled by <see cref="Radius"/> (and
/// <see cref="Aspect"/> along v), rotated by <see cref="Angle"/> and centred at (<see cref="CenterX"/>, <see cref="CenterY"/>).
/// </summary>
internal readonly struct Shape(ShapeKind kind, double centerX, double centerY, double radius, double aspect, double angle)
{
    public const int KindCount = 7;

    private readonly double cos = Math.Cos(angle), sin = Math.Sin(angle);

    public ShapeKind Kind { get; } = kind;
    public double CenterX { get; } = centerX;
    public double CenterY { get; } = centerY;
    public double Radius { get; } = radius;
    public double Aspect { get; } = aspect;

    public bool Contains(double x, double y)
    {
        double dx = x - CenterX, dy = y - CenterY;
        double u = (dx * cos + dy * sin) / Radius;
        double v = (-dx * sin + dy * cos) / (Radius * Aspect);
        double r2 = u * u + v * v;
        return Kind switch
        {
            ShapeKind.Disc => r2 <= 1,
            ShapeKind.Square => Math.Abs(u) <= 0.85 && Math.Abs(v) <= 0.85,
            ShapeKind.Triangle => v <= 0.5 && v >= -1 + 1.732 * Math.Abs(u),
            ShapeKind.Ring => r2 <= 1 && r2 >= 0.36,
            ShapeKind.Cross => (Math.Abs(u) <= 0.3 && Math.Abs(v) <= 1) || (Math.Abs(v) <= 0.3 && Math.Abs(u) <= 1),
            ShapeKind.Star => Math.Sqrt(r2) <= 0.6 + 0.4 * Math.Cos(5 * Math.Atan2(v, u)),
            ShapeKind.Diamond => Math.Abs(u) + Math.Abs(v) <= 1,
            _ => false,
        };
    }

    /// <summary>Pixel rows/columns outside which the shape cannot reach, clipped to the canvas.</summary>
    public (int X0, int Y0, int X1, int Y1) Bounds(int width, int height)
    {
        double extent = Radius * Math.Sqrt(1 + Aspect * Aspect);
        return (
            Math.Clamp((int)Math.Floor(CenterX - extent), 0, width),
            Math.Clamp((int)Math.Floor(CenterY - extent), 0, height),
            Math.Clamp((int)Math.Ceiling(CenterX + extent) + 1, 0, width),
            Math.Clamp((int)Math.Ceiling(CenterY + extent) + 1, 0, height));
    }
}
