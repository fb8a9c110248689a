"""Offline evaluation of the detectors: NAB scoring and injected faults, with their baselines.

It imports the library and nothing in the library imports it: `otel-insights evaluate nab`
scores detectors on labelled data (NAB's corpus and rules, `nab/`), `evaluate faults` runs
generated traffic with labelled faults through the pipeline's WindowDetector (`faults.py`).
NabDetector and the windowed Gaussian baseline are detectors for the NAB benchmark only.
"""
