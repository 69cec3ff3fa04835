"""Evaluation of pretrained encoders: metrics, honest splits, linear/kNN probes, fine-tuning and the evaluation card."""

from .card import Card, compare, read_cards, write_card
from .evaluate import EvalConfig, EvalResult, evaluate, held_out_split
from .finetune import FinetuneOptions, finetune, supervised
from .metrics import METRICS, classification_metrics, confusion_matrix
from .probes import ProbeResult, knn_predict, knn_probe, linear_probe
from .splits import group_split, label_fraction_subset, parse_label_fraction

__all__ = [
    "EvalConfig", "EvalResult", "evaluate", "held_out_split", "FinetuneOptions", "finetune", "supervised",
    "METRICS", "classification_metrics", "confusion_matrix", "ProbeResult", "knn_predict", "knn_probe",
    "linear_probe", "group_split", "label_fraction_subset", "parse_label_fraction", "Card", "write_card", "read_cards",
    "compare",
]
