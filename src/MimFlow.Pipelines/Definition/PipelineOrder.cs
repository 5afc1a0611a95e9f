namespace MimFlow.Pipelines.Definition;

/// <summary>The run order: every stage after the stages it reads from, otherwise in declaration order.</summary>
public static class PipelineOrder
{
    public static IReadOnlyList<StageDefinition> Of(PipelineDefinition pipeline)
    {
        var order = new List<StageDefinition>();
        var placed = new HashSet<string>(StringComparer.Ordinal);
        while (order.Count < pipeline.Stages.Count)
        {
            var next = pipeline.Stages.FirstOrDefault(s => !placed.Contains(s.Name) && s.Upstream.All(placed.Contains));
            if (next is null) throw new PipelineException(pipeline.Source, $"the stages form a cycle (each reads from the next): {string.Join(" → ", Cycle(pipeline, placed))}");
            order.Add(next);
            placed.Add(next.Name);
        }
        return order;
    }

    /// <summary>Every stage that reads, directly or through others, from <paramref name="stage"/>.</summary>
    public static IReadOnlySet<string> Downstream(PipelineDefinition pipeline, string stage)
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (var candidate in pipeline.Stages)
                if (!found.Contains(candidate.Name) && candidate.Upstream.Any(u => u == stage || found.Contains(u)))
                    grew = found.Add(candidate.Name);
        }
        return found;
    }

    /// <summary>A cycle among the unplaced stages, written as the path that closes it (a → b → a).</summary>
    private static IEnumerable<string> Cycle(PipelineDefinition pipeline, HashSet<string> placed)
    {
        var byName = pipeline.Stages.ToDictionary(s => s.Name);
        string current = pipeline.Stages.First(s => !placed.Contains(s.Name)).Name;
        var path = new List<string>();
        // Walking to any unplaced upstream stays among unplaced stages, so it must revisit one: that closes the cycle.
        while (!path.Contains(current))
        {
            path.Add(current);
            current = byName[current].Upstream.First(u => !placed.Contains(u));
        }
        return path.Skip(path.IndexOf(current)).Append(current);
    }
}
