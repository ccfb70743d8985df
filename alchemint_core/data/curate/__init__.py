"""Curation: a user's videos and captions -> an AlcheMinT training set (the paper's data pipeline)."""
from .pipeline import BACKENDS, CurateReport, curate

__all__ = ["BACKENDS", "CurateReport", "curate"]
