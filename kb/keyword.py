"""The keyword side of retrieval: BM25 over the same chunks as the dense side.

Each chunk's terms (lower-cased, stemmed, stop words dropped) are computed once at ingest
time and kept in the ledger, so the index grows and shrinks with ingestion.  In a process,
the terms of the visible chunks become one sparse matrix of BM25 weights, rebuilt only
when the ledger's generation changes, never per query.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from scipy import sparse

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m re ve y shall may might must ought per via etc eg ie what's""".split()
)


@functools.lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stemWord(word)


def tokenize(text: str) -> list[str]:
    """Terms of a text for BM25: lower case, stop words out, Snowball-stemmed."""
    words = _TOKEN.findall(text.lower().replace("’", "'"))
    return [_stem(w.split("'")[0]) for w in words if w not in STOP_WORDS and len(w) > 1 or w.isdigit()]


class KeywordIndex:
    """BM25 weights of a fixed list of chunks, as a sparse (chunks × terms) matrix."""

    def __init__(self, term_lists: list[list[str]], k1: float = 1.2, b: float = 0.75):
        self.size = len(term_lists)
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        counts: list[float] = []
        lengths = np.zeros(self.size, dtype=np.float32)
        for row, terms in enumerate(term_lists):
            lengths[row] = len(terms)
            tally: dict[int, int] = {}
            for term in terms:
                col = vocabulary.setdefault(term, len(vocabulary))
                tally[col] = tally.get(col, 0) + 1
            rows.extend([row] * len(tally))
            cols.extend(tally.keys())
            counts.extend(tally.values())
        self.vocabulary = vocabulary
        tf = sparse.csr_matrix(
            (np.asarray(counts, dtype=np.float32), (rows, cols)), shape=(self.size, max(1, len(vocabulary)))
        )
        document_frequency = np.bincount(np.asarray(cols, dtype=np.int64), minlength=tf.shape[1])
        self.idf = np.log1p((self.size - document_frequency + 0.5) / (document_frequency + 0.5)).astype(np.float32)
        average = float(lengths.mean()) if self.size else 1.0
        norm = k1 * (1 - b + b * lengths / max(average, 1e-9))
        tf = tf.tocoo()
        weights = tf.data * (k1 + 1) / (tf.data + norm[tf.row]) * self.idf[tf.col]
        self.matrix = sparse.csc_matrix((weights, (tf.row, tf.col)), shape=tf.shape)

    def scores(self, query: str, mask: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every chunk for ``query`` (0 where masked out)."""
        columns = [self.vocabulary[t] for t in set(tokenize(query)) if t in self.vocabulary]
        if not columns or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        result = np.asarray(self.matrix[:, columns].sum(axis=1)).ravel()
        if mask is not None:
            result = np.where(mask, result, 0.0)
        return result

    def top(self, query: str, n: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Row numbers and scores of the ``n`` best chunks with a score above zero."""
        return best_rows(self.scores(query, mask), n)


def best_rows(scores: np.ndarray, n: int) -> list[tuple[int, float]]:
    """Row numbers and scores of the ``n`` highest scores above zero, best first."""
    if not scores.size:
        return []
    n = min(n, int((scores > 0).sum()))
    if n <= 0:
        return []
    best = np.argpartition(-scores, n - 1)[:n]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]
