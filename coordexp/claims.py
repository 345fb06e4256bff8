"""The paper's claims as data: claims.yaml beside this module holds the paper's words for each row of its headline
table and the bounds the reproduction holds the measurements to (what solving, fitting and failing mean)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


@dataclass(frozen=True)
class Row:
    """One (task, split) row of the paper's headline table: its words and the bound on the baseline's test set."""

    conv: str        # the paper's words for the conv / deconv column
    coordconv: str   # ... for the CoordConv column
    fails: float     # the baseline fails its test set: accuracy, IoU <= it; pixel error >= it


def _load() -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(CLAIMS_FILE))
    return {task: {"solved": float(c["solved"]), "fits": float(c["fits"]),
                   "rows": {split: Row(*(r[column].format(fails=r["fails"], solved=c["solved"])
                                         for column in ("conv", "coordconv")), float(r["fails"]))
                            for split, r in c.items() if isinstance(r, dict)}}
            for task, c in raw.items()}


_CLAIMS = _load()


def solved(task: str) -> float:
    """CoordConv's result on `task` as a bound on its headline metric (accuracy, IoU: >= it; pixel error: < it)."""
    return _CLAIMS[task]["solved"]


def fits(task: str) -> float:
    """The bound at which a baseline fits its training set (pixel error: train <= test / it)."""
    return _CLAIMS[task]["fits"]


def row(task: str, split: str) -> Row:
    """The paper's row for `task` on `split`."""
    return _CLAIMS[task]["rows"][split]
