"""Hybrid retrieval: Chroma's dense results and our BM25 results, fused (scaled scores
mixed, or reciprocal rank fusion), filtered, and diversified so one document (or one page)
cannot fill every slot.  A question that asks several things is also searched part by
part (:mod:`kb.query_parts`), and a passage answering one part well gains a share of it.

Filtered queries do not use Chroma's ``where`` (slow on large collections): the filter
becomes a row mask and the dense side is an exact search over the masked chunk vectors
held in the snapshot, which is both exact and fast at this scale.
"""

from __future__ import annotations

import numpy as np

from kb.keyword import best_rows
from kb.knowledge_base import KnowledgeBase
from kb.query_parts import question_parts
from kb.records import Passage
from kb.settings import Settings
from kb.snapshot import Filters, Snapshot, SnapshotCache


class Searcher:
    """Answers ``search(query)`` against one knowledge base, reusing its snapshot."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.settings: Settings = kb.settings
        self.snapshots = SnapshotCache(kb)

    def snapshot(self) -> Snapshot:
        return self.snapshots.get()

    def embed_question(self, question: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The question's vector and its parts' (:mod:`kb.query_parts`), in one batch."""
        return self._embed_with_parts(question, self._parts(question))

    def _parts(self, question: str) -> list[str]:
        return question_parts(question) if self.settings.part_share > 0 else []

    def _embed_with_parts(self, question: str, parts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        vectors = list(self.kb.query_embedder.embed([question, *parts]))
        return vectors[0], vectors[1:]

    def search(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        *,
        query_vector: np.ndarray | None = None,
        part_vectors: list[np.ndarray] | None = None,
        diversify: bool = True,
    ) -> list[Passage]:
        """The ``k`` best passages for ``query`` (best first), each with its scores.
        ``query_vector`` and ``part_vectors`` (:meth:`embed_question`), when given, save
        embedding the question again."""
        settings = self.settings
        k = k or settings.top_k
        snapshot = self.snapshot()
        if not len(snapshot) or not query.strip():
            return []
        parts = self._parts(query)
        if query_vector is None:
            vector, part_vectors = self._embed_with_parts(query, parts)
        else:
            vector = query_vector
            if part_vectors is None or len(part_vectors) != len(parts):
                part_vectors = list(self.kb.query_embedder.embed(parts)) if parts else []
        mask = snapshot.mask(filters)
        bm25 = snapshot.keyword.scores(query, mask)
        fused = self._fused(snapshot, query, vector, mask, bm25=bm25)
        if parts:  # exact dense search over the snapshot's vectors: faster than a second HNSW query here
            by_part = [self._fused(snapshot, p, v, mask, exact=True) for p, v in zip(parts, part_vectors)]
            self._add_part_evidence(snapshot, fused, by_part, vector, bm25)
        self._add_neighbour_evidence(snapshot, fused)
        self._prefer_named_organisations(snapshot, query, fused)
        ordered = sorted(fused.items(), key=lambda item: -item[1]["score"])
        rows = [row for row, _ in ordered]
        chosen = self._diversify(snapshot, rows, k) if diversify else rows[:k]
        passages = []
        for row in chosen:
            info = fused[row]
            chunk = snapshot.chunks[row]
            passages.append(
                Passage(
                    chunk=chunk,
                    document=snapshot.documents[chunk.doc_id],
                    score=info["score"],
                    dense_score=info.get("dense"),
                    keyword_score=info.get("keyword"),
                    dense_rank=info.get("dense_rank"),
                    keyword_rank=info.get("keyword_rank"),
                )
            )
        return passages

    def _fused(
        self, snapshot: Snapshot, query: str, vector: np.ndarray, mask: np.ndarray | None, *,
        exact: bool = False, bm25: np.ndarray | None = None,
    ) -> dict[int, dict]:
        """Dense and keyword candidates for one query, fused: row → scores.  ``bm25``:
        the query's keyword scores, when already computed."""
        if bm25 is None:
            bm25 = snapshot.keyword.scores(query, mask)
        dense = self._dense(snapshot, vector, mask, exact=exact)
        keyword = best_rows(bm25, self.settings.candidates)
        return self._fuse(dense, keyword, snapshot, vector, bm25)

    def _add_part_evidence(
        self, snapshot: Snapshot, fused: dict[int, dict], by_part: list[dict[int, dict]],
        vector: np.ndarray, bm25: np.ndarray,
    ) -> None:
        """Each passage gains ``part_share`` of its best score for any one part of the
        question; a passage only a part found joins the candidates with that alone.  Its
        dense and keyword scores stay those of the whole question (abstention reads them)."""
        share = self.settings.part_share
        for row in set().union(*by_part):
            best = max(part[row]["score"] for part in by_part if row in part)
            if row not in fused:
                similarity = float(snapshot.vectors[row] @ np.asarray(vector, dtype=np.float32))
                fused[row] = {"score": 0.0, "dense": similarity, "keyword": float(bm25[row])}
            fused[row]["score"] += share * best

    def _prefer_named_organisations(self, snapshot: Snapshot, query: str, fused: dict[int, dict]) -> None:
        """A question that names an organisation (:mod:`kb.mentions`) prefers its
        documents: their passages gain ``organisation_boost`` of the best passage's score."""
        boost = self.settings.organisation_boost
        named = snapshot.organisation_names.mentioned(query) if boost > 0 and fused else set()
        if not named:
            return
        preferred = snapshot.rows_of_organisations(named)
        lift = boost * max(info["score"] for info in fused.values())
        for row, info in fused.items():
            if preferred[row]:
                info["score"] += lift

    def _dense(
        self, snapshot: Snapshot, vector: np.ndarray, mask: np.ndarray | None, *, exact: bool = False
    ) -> list[tuple[int, float]]:
        n = self.settings.candidates
        if exact or mask is not None or self.settings.dense_source == "memory":
            return snapshot.dense_top(vector, n, mask)
        hits = self.kb.store.query(vector, n)
        # Only chunks of ready documents are visible; Chroma may briefly hold others.
        return [(snapshot.row_of[cid], sim) for cid, sim in hits if cid in snapshot.row_of]

    def _fuse(self, dense: list[tuple[int, float]], keyword: list[tuple[int, float]], snapshot: Snapshot, vector: np.ndarray, bm25: np.ndarray) -> dict[int, dict]:
        if self.settings.fusion == "convex":
            return self._fuse_convex(dense, keyword, snapshot, vector, bm25)
        return self._fuse_rrf(dense, keyword)

    def _fuse_convex(self, dense, keyword, snapshot: Snapshot, vector: np.ndarray, bm25: np.ndarray) -> dict[int, dict]:
        """Both scores for every candidate, each scaled to 0..1 over the candidates, mixed."""
        rows = list(dict.fromkeys([r for r, _ in dense] + [r for r, _ in keyword]))
        if not rows:
            return {}
        index = np.asarray(rows)
        similarities = snapshot.vectors[index] @ np.asarray(vector, dtype=np.float32)
        bm25 = bm25[index]
        def scale(values):
            low, high = float(values.min()), float(values.max())
            return (values - low) / (high - low) if high > low else np.zeros_like(values)
        alpha = self.settings.dense_share
        mixed = (alpha * scale(similarities) + (1 - alpha) * scale(bm25)) * snapshot.prior[index]
        dense_rank = {r: i for i, (r, _) in enumerate(dense, start=1)}
        keyword_rank = {r: i for i, (r, _) in enumerate(keyword, start=1)}
        return {
            row: {"score": float(m), "dense": float(sim), "keyword": float(b), "dense_rank": dense_rank.get(row), "keyword_rank": keyword_rank.get(row)}
            for row, m, sim, b in zip(rows, mixed, similarities, bm25)
        }

    def _fuse_rrf(self, dense: list[tuple[int, float]], keyword: list[tuple[int, float]]) -> dict[int, dict]:
        settings = self.settings
        fused: dict[int, dict] = {}
        for rank, (row, similarity) in enumerate(dense, start=1):
            entry = fused.setdefault(row, {"score": 0.0})
            entry.update(dense=similarity, dense_rank=rank)
            entry["score"] += settings.dense_weight / (settings.rrf_k + rank)
        for rank, (row, score) in enumerate(keyword, start=1):
            entry = fused.setdefault(row, {"score": 0.0})
            entry.update(keyword=score, keyword_rank=rank)
            entry["score"] += settings.keyword_weight / (settings.rrf_k + rank)
        return fused

    def _add_neighbour_evidence(self, snapshot: Snapshot, fused: dict[int, dict]) -> None:
        """A passage whose neighbours (the chunks before and after it in the same document)
        also match gains a share of their score: the answer to a question is often spread
        over a paragraph that the chunker cut in two."""
        share = self.settings.neighbour_share
        if share <= 0:
            return
        base = {row: info["score"] for row, info in fused.items()}
        for row, info in fused.items():
            doc_id = snapshot.chunks[row].doc_id
            neighbours = [
                base[n]
                for n in (row - 1, row + 1)
                if n in base and snapshot.chunks[n].doc_id == doc_id
            ]
            if neighbours:
                info["score"] += share * max(neighbours)

    def _diversify(self, snapshot: Snapshot, rows: list[int], k: int) -> list[int]:
        """Best-first, skipping a passage whose document already has ``max_per_document``
        slots, whose page already has ``max_per_page`` (overlapping chunks of one page say
        much the same), or whose text nearly repeats one already chosen."""
        chosen: list[int] = []
        per_document: dict[str, int] = {}
        per_page: dict[tuple[str, int], int] = {}
        limit = self.settings.max_per_document
        page_limit = self.settings.max_per_page
        threshold = self.settings.near_duplicate_similarity
        for row in rows:
            doc_id = snapshot.chunks[row].doc_id
            if per_document.get(doc_id, 0) >= limit:
                continue
            page = (doc_id, snapshot.chunks[row].page_start)
            if per_page.get(page, 0) >= page_limit:
                continue
            if chosen and float(np.max(snapshot.vectors[chosen] @ snapshot.vectors[row])) >= threshold:
                continue
            chosen.append(row)
            per_document[doc_id] = per_document.get(doc_id, 0) + 1
            per_page[page] = per_page.get(page, 0) + 1
            if len(chosen) == k:
                return chosen
        if len(chosen) < k:  # fill from what was skipped rather than return fewer
            for row in rows:
                if row not in chosen:
                    chosen.append(row)
                    if len(chosen) == k:
                        break
        return chosen
