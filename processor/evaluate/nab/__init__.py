"""NAB v1.1 benchmark: the scorer, the streaming evaluation harness and NAB's calibration baselines."""
