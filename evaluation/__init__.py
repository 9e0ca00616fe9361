"""Evaluation of KARL tokenizers: metrics, fixed / variable allocation, calibration, search baseline,
complexity analysis and the report. Entry point: `run_scripts/evaluate.sh` (evaluation.main)."""
from .inputs import EvaluationError, load_eval_data
from .metrics import MetricAggregator, l1_per_image, mse_per_image, psnr_from_mse, ssim_per_image
from .perceptual_metrics import PerceptualMetrics
from .pipeline import SECTIONS, EvalSettings, run_evaluation
from .runner import EvalBatch, EvalData

__all__ = [
    "SECTIONS", "EvalBatch", "EvalData", "EvalSettings", "EvaluationError", "MetricAggregator",
    "PerceptualMetrics", "l1_per_image", "load_eval_data", "mse_per_image", "psnr_from_mse",
    "run_evaluation", "ssim_per_image",
]
