r"""Intervals for the claims table: paired differences and recovery rates.

- `paired_interval`: the mean of per-seed differences $d_s = e^{A}_s - e^{B}_s$ of two
  schedules run on the same seeds, with the Student-t interval
  $\bar d \pm t_{0.975, S-1}\, s_d/\sqrt S$ (the seeds are independent draws of the
  task, so the differences are independent; pairing removes the seed-to-seed spread
  that both schedules share).
- `wilson_interval`: the Wilson score interval of a binomial proportion, which stays
  inside [0, 1] and is not of width 0 at 0/S or S/S (where the normal interval is).
- `verdict`: "reproduces" when the interval of every comparison lies below 0 (the
  claimed schedule's error is lower), "does not reproduce" when one lies above 0,
  "inconclusive" otherwise.
"""

import dataclasses

import numpy as np
import scipy.stats


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def paired_interval(first, second, level: float = 0.95) -> Interval:
    """Mean of `first - second` (per seed) with its Student-t interval."""
    differences = np.asarray(first, float) - np.asarray(second, float)
    if differences.ndim != 1 or differences.size < 2:
        raise ValueError(
            "`first` and `second` must be 1-D with the same length >= 2 (one value "
            f"per seed), got {differences.shape}."
        )
    mean = float(differences.mean())
    sem = float(differences.std(ddof=1) / np.sqrt(differences.size))
    half = float(scipy.stats.t.ppf(0.5 + level / 2, differences.size - 1)) * sem
    return Interval(mean, mean - half, mean + half)


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    r"""Wilson score interval of `successes / trials`:
    $\frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}$."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}."
        )
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    p, n = successes / trials, trials
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return Interval(
        float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half))
    )


def verdict(*intervals: Interval) -> str:
    """The claimed schedule against each alternative (differences claimed < 0)."""
    if all(interval.high < 0 for interval in intervals):
        return "reproduces"
    if any(interval.low > 0 for interval in intervals):
        return "does not reproduce"
    return "inconclusive"
