"""Streaming anomaly detectors over health-window metrics: one learn_one/score_one contract.

Scalar detectors (one metric): RobustBaseline, EWMA, Seasonal, WindowedGaussian (NAB's
baseline, for the benchmark only). Vector detectors (one entity's feature vector):
StreamingAutoencoder, Ensemble. Thresholded turns any of them into flags. The contract
is in :mod:`processor.detect.base`; scores share the calibration in
:mod:`processor.detect.stats`. Pure numpy, no pipeline code.
"""

from processor.detect.autoencoder import Autoencoder, FeatureDeviation, StreamingAutoencoder
from processor.detect.base import BaseDetector, Detector, Explanation, VectorDetector
from processor.detect.ensemble import Assessment, Ensemble, Factor
from processor.detect.ewma import EWMA
from processor.detect.gaussian import WindowedGaussian
from processor.detect.robust import RobustBaseline
from processor.detect.seasonal import Seasonal
from processor.detect.threshold import Thresholded

__all__ = [
    "Assessment",
    "Autoencoder",
    "BaseDetector",
    "Detector",
    "EWMA",
    "Ensemble",
    "Explanation",
    "Factor",
    "FeatureDeviation",
    "RobustBaseline",
    "Seasonal",
    "StreamingAutoencoder",
    "Thresholded",
    "VectorDetector",
    "WindowedGaussian",
]
