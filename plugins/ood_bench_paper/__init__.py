"""Built-in plugins: the LogitNorm paper's losses, architectures, detectors and datasets."""
