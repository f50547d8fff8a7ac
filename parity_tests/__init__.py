"""The parity suite: every variant, every framework, every device, layer by layer, against a float64 oracle."""
