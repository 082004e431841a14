"""Instruction grouping: similarity backends, the codebook of groups, and per-instance routing."""

from lcia.grouping.codebook import Codebook, Group
from lcia.grouping.similarity import SIMILARITIES, THRESHOLDS, Similarity, build_similarity, resolve_threshold

__all__ = ["SIMILARITIES", "THRESHOLDS", "Codebook", "Group", "Similarity", "build_similarity", "resolve_threshold"]
