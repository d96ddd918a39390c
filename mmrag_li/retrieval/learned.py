"""Learned fusion: a logistic-regression model over candidate features, read from a JSON file.

``mmrag tune`` (:mod:`mmrag_li.evaluation.tune`) fits the model on the user's labelled queries and
writes it; ``retrieval.fusion: learned`` with ``retrieval.fusion_model: FILE`` makes
``FusionRetriever`` rank candidates by the model's probability of relevance. The file is plain
JSON (no pickle: loading it runs no code): the feature list, standardisation (mean, scale),
coefficients and intercept, the retrievers and the models it was fitted on, the scikit-learn
version and a training summary. Scoring needs only the standard library, not scikit-learn.

:func:`build_fuser` is what ``FusionRetriever`` calls for ``calibrated``, ``score_aware`` and ``learned``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mmrag_li.errors import MMRAGError
from mmrag_li.retrieval.calibrated_fusion import CalibratedFuser, ScoreAwareFuser
from mmrag_li.retrieval.calibration import Calibration, ensure_calibration
from mmrag_li.retrieval.features import FEATURE_VERSION, build_features, feature_names

MODEL_FORMAT = "mmrag_li.fusion_model"
CALIBRATED_FUSIONS = ("calibrated", "score_aware", "learned")  # the fusions that read the store's calibration
MODEL_VERSION = 1


class FusionModelError(MMRAGError):
    """A fusion model file that is missing, unreadable, or fitted on other retrievers or models;
    the message names the file and the mismatch."""


@dataclass
class FusionModel:
    """A fitted linear fusion model (logistic regression on standardised features).

    Args:
        retrievers: the retriever names it was fitted on (feature order).
        features: the feature names (see :func:`~mmrag_li.retrieval.features.feature_names`).
        coef: one coefficient per feature (on standardised features).
        intercept: the intercept.
        mean: per-feature mean used for standardisation.
        scale: per-feature standard deviation used for standardisation (0 -> 1).
        models: retriever -> "model@collection" of the calibration it was fitted with.
        rrf_k: the RRF constant of the rank features.
        sklearn_version: the scikit-learn version that fitted it.
        training: a summary of the training run (queries, candidates, cross-validation, ...).
    """

    retrievers: List[str]
    features: List[str]
    coef: List[float]
    intercept: float
    mean: List[float]
    scale: List[float]
    models: Dict[str, str] = field(default_factory=dict)
    rrf_k: int = 60
    sklearn_version: str = ""
    training: Dict[str, Any] = field(default_factory=dict)

    def decision(self, row: Sequence[float]) -> float:
        """The linear score ``w . (x - mean) / scale + b`` of one feature row.

        Args:
            row: feature values in :attr:`features` order.
        """
        return self.intercept + sum(w * (x - m) / (s or 1.0)
                                    for w, x, m, s in zip(self.coef, row, self.mean, self.scale))

    def probability(self, row: Sequence[float]) -> float:
        """P(relevant) of one feature row (the logistic of :meth:`decision`).

        Args:
            row: feature values in :attr:`features` order.
        """
        z = max(min(self.decision(row), 50.0), -50.0)
        return 1.0 / (1.0 + math.exp(-z))

    def weights(self) -> Dict[str, float]:
        """feature -> coefficient (standardised), largest magnitude first."""
        return dict(sorted(zip(self.features, self.coef), key=lambda kv: -abs(kv[1])))

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form."""
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "feature_version": FEATURE_VERSION,
                "kind": "logistic_regression", "retrievers": list(self.retrievers), "features": list(self.features),
                "coef": [round(c, 8) for c in self.coef], "intercept": round(self.intercept, 8),
                "mean": [round(m, 8) for m in self.mean], "scale": [round(s, 8) for s in self.scale],
                "models": dict(self.models), "rrf_k": self.rrf_k, "sklearn_version": self.sklearn_version,
                "training": self.training}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (atomically); returns the path.

        Args:
            path: the model file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".fusion.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1, ensure_ascii=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is not secret
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FusionModel":
        """Read and check a model file.

        Args:
            path: the model file.

        Raises:
            FusionModelError: missing file, not JSON, not a fusion model, or inconsistent.
        """
        p = Path(path)
        if not p.is_file():
            raise FusionModelError(f"fusion model file not found: {p} (retrieval.fusion_model); run "
                                   "`mmrag tune --queries Q.jsonl --corpus DIR --out FILE` to make one")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FusionModelError(f"{p}: not a readable JSON fusion model ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise FusionModelError(f"{p}: not an mmrag_li fusion model (\"format\" is not {MODEL_FORMAT!r})")
        if data.get("version") != MODEL_VERSION or data.get("feature_version") != FEATURE_VERSION:
            raise FusionModelError(f"{p}: model version {data.get('version')}/features {data.get('feature_version')}, "
                                   f"this mmrag_li reads {MODEL_VERSION}/{FEATURE_VERSION}: re-run `mmrag tune`")
        try:
            model = cls(list(data["retrievers"]), list(data["features"]), [float(c) for c in data["coef"]],
                        float(data["intercept"]), [float(m) for m in data["mean"]], [float(s) for s in data["scale"]],
                        dict(data.get("models") or {}), int(data.get("rrf_k", 60)), str(data.get("sklearn_version", "")),
                        dict(data.get("training") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FusionModelError(f"{p}: incomplete fusion model ({exc})") from None
        n = len(model.features)
        if model.features != feature_names(model.retrievers) or not (len(model.coef) == len(model.mean)
                                                                     == len(model.scale) == n):
            raise FusionModelError(f"{p}: its feature list does not match its retrievers {model.retrievers}: "
                                   "re-run `mmrag tune`")
        return model

    def check(self, retrievers: Sequence[str], models: Optional[Mapping[str, str]] = None, source: str = "") -> None:
        """Raise when this model was fitted on other retrievers or embedding models than ``retrievers``.

        Args:
            retrievers: the FusionRetriever's retriever names.
            models: its calibrated retriever -> "model@collection" (None: retrievers only).
            source: the file name for the message.
        """
        where = source or "the fusion model"
        have, want = set(retrievers), set(self.retrievers)
        if have != want:
            parts = []
            if want - have:
                parts.append(f"missing here: {', '.join(sorted(want - have))}")
            if have - want:
                parts.append(f"not in the model: {', '.join(sorted(have - want))}")
            raise FusionModelError(f"{where} was fitted on retrievers {', '.join(self.retrievers)} but this "
                                   f"retriever has {', '.join(retrievers)} ({'; '.join(parts)}): re-run `mmrag tune` "
                                   "with this configuration or set retrieval.retrievers to match")
        if models is None:
            return
        diff = {n: (m, models.get(n)) for n, m in self.models.items() if models.get(n) != m}
        if diff:
            text = "; ".join(f"{n}: fitted with {a}, store has {b}" for n, (a, b) in sorted(diff.items()))
            raise FusionModelError(f"{where} was fitted with other models ({text}): re-run `mmrag tune` on this store")


class LearnedFuser:
    """Ranks candidates by a :class:`FusionModel`'s probability of relevance.

    Args:
        model: the fitted model.
        calibration: the store's calibration (the confidence features).
    """

    def __init__(self, model: FusionModel, calibration: Optional[Calibration]):
        self.model = model
        self.calibration = calibration

    def fuse(self, ranked: Mapping[str, Sequence[Any]], query_str: str,
             weights: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        """key -> P(relevant). ``weights`` are ignored (the model learned its own).

        Args:
            ranked: retriever name -> ranked ``(key, score, hit)`` list.
            query_str: the (expanded) query text.
            weights: ignored.
        """
        image_query = bool(ranked.get("image2image"))
        keys, rows = build_features(ranked, query_str, self.model.retrievers, self.calibration, image_query,
                                    self.model.rrf_k)
        scored = {k: self.model.probability(r) for k, r in zip(keys, rows)}
        for items in ranked.values():  # a candidate only an unknown retriever found: last
            for key, _s, _h in items:
                scored.setdefault(key, 0.0)
        return scored

    def max_score(self, names: Sequence[str], weights: Optional[Mapping[str, float]] = None) -> float:
        """1.0: fused scores are probabilities.

        Args:
            names: unused.
            weights: unused.
        """
        return 1.0


def build_fuser(fusion: Any) -> Any:
    """The fuser for ``fusion.config.fusion`` ("calibrated", "score_aware" or "learned"; None otherwise), with the
    store's calibration (computed on first use, see :func:`ensure_calibration`).

    Args:
        fusion: a ``FusionRetriever``.

    Raises:
        FusionModelError: "learned" without ``retrieval.fusion_model``, or a model that does not fit.
    """
    cfg = fusion.config
    if cfg.fusion not in CALIBRATED_FUSIONS:
        return None
    if cfg.fusion == "learned":
        if not cfg.fusion_model:
            raise FusionModelError("retrieval.fusion is 'learned' but retrieval.fusion_model is not set: "
                                   "give the file `mmrag tune --out FILE` wrote")
        model = FusionModel.load(cfg.fusion_model)  # before the calibration: a bad file fails fast
        model.check(list(fusion.retrievers), None, str(cfg.fusion_model))
        cal = ensure_calibration(fusion)
        model.check(list(fusion.retrievers), cal.models(), str(cfg.fusion_model))
        return LearnedFuser(model, cal)
    if cfg.fusion == "calibrated":
        return CalibratedFuser(ensure_calibration(fusion), cfg.rrf_k, cfg.calibrated_floor, cfg.hit_confidence)
    return ScoreAwareFuser(ensure_calibration(fusion), cfg.rrf_k)


__all__ = ["CALIBRATED_FUSIONS", "FusionModel", "FusionModelError", "LearnedFuser", "MODEL_FORMAT", "build_fuser"]
