using System.Runtime.CompilerServices;
using System.Threading.Tasks.Dataflow;

namespace MimFlow.Data.Pipeline;

public static class SourceBlocks
{
    /// <summary>Every item the block offers, in order, until it completes; a faulted block throws its error after the
    /// items it delivered.</summary>
    public static async IAsyncEnumerable<T> ReadAllAsync<T>(this IReceivableSourceBlock<T> block, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (await block.OutputAvailableAsync(cancellationToken))
            while (block.TryReceive(out var item)) yield return item;
        await block.Completion;
    }
}
