"""Plain per-value detectors the numpy banks are held to, bit for bit (test oracles)."""
