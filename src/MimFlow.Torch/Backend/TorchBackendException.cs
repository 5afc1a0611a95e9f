namespace MimFlow.Torch.Backend;

/// <summary>The torch backend could not be loaded; the message names the file and what to do.</summary>
public sealed class TorchBackendException(string message, Exception? inner = null) : Exception(message, inner);
