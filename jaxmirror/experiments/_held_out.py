"""What the held-out generalization experiments share: choosing each schedule's
setting on the tuning seeds, and the table row of a chosen schedule."""

import numpy as np

from ._statistics import wilson_interval


RECOVERED = 0.05
"""The relative error below which a truth counts as recovered."""


def choose(candidates, tuning_scores) -> dict[str, tuple[int, str]]:
    """Per kind of schedule ("never", "always", "switch-off"), the candidate with the
    lowest mean score over the tuning seeds: `{kind: (row index, setting)}`.

    `candidates` are `(kind, setting, ...)` tuples; `tuning_scores` has one row per
    candidate and one column per tuning seed."""
    chosen = {}
    for i, (kind, setting, *_) in enumerate(candidates):
        score = float(np.mean(tuning_scores[i]))
        if kind not in chosen or score < chosen[kind][2]:
            chosen[kind] = (i, setting, score)
    return {kind: (i, setting) for kind, (i, setting, _) in chosen.items()}


def _spread(values) -> str:
    return f"{np.mean(values):.3g} ± {np.std(values, ddof=1):.2g}"


def summary_row(kind: str, result: dict, seeds: int) -> list[str]:
    """Schedule, setting, held-out error and relative error (mean ± std), mean rank
    (where measured) and recovery with its Wilson interval."""
    recovered = int(np.sum(result["relative_error"] < RECOVERED))
    row = [kind, result["setting"], _spread(result["held_out"])]
    row.append(_spread(result["relative_error"]))
    if "rank" in result:
        row.append(f"{np.mean(result['rank']):.1f}")
    row.append(f"{recovered}/{seeds}: {wilson_interval(recovered, seeds)}")
    return row
