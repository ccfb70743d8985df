"""Scoring generated videos (S2VTime): timing from mask tracks, identity by CLIP, confidence intervals."""
from .subjects import SubjectScore, score_subject, summarise, table, track_for_scoring

__all__ = ["SubjectScore", "score_subject", "summarise", "table", "track_for_scoring"]
