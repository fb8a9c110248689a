"""Streaming anomaly detection over final health windows: what the pipeline's judge runs.

WindowDetector (:mod:`processor.detect.window`) judges every entity of a window at once
with the numpy banks (:mod:`processor.detect.banks`), the exact count tests
(:mod:`processor.detect.counts`) and per-entity autoencoders; incidents and attribution
follow. RobustBaseline, EWMA and Seasonal are one-row views of the banks behind the
learn_one/score_one contract (:mod:`processor.detect.base`), Thresholded wraps one with the
same learning refusal the judge applies. Scores share the calibration in
:mod:`processor.detect.stats`. Pure numpy, no pipeline code; offline evaluation is in
:mod:`processor.evaluate`.
"""

from processor.detect.autoencoder import Autoencoder, FeatureDeviation
from processor.detect.base import BaseDetector, Detector, Explanation
from processor.detect.ewma import EWMA
from processor.detect.robust import RobustBaseline
from processor.detect.seasonal import Seasonal
from processor.detect.threshold import Thresholded

__all__ = [
    "Autoencoder",
    "BaseDetector",
    "Detector",
    "EWMA",
    "Explanation",
    "FeatureDeviation",
    "RobustBaseline",
    "Seasonal",
    "Thresholded",
]
