"""How to tell whether a sampler or a guidance rule is right: distances between sample
sets (:mod:`.distances`), the coverage of credible intervals (:mod:`.coverage`), test
problems with exact answers (:mod:`.problems`) and reference solutions (:mod:`.reference`).
Imports :mod:`priors` only."""

from evaluation.coverage import interval_coverage
from evaluation.distances import (
    frechet_distance,
    max_sliced_wasserstein,
    random_directions,
    slice_distances,
    sliced_wasserstein,
)
from evaluation.problems import well_separated_mixture
from evaluation.reference import probability_flow

__all__ = [
    "frechet_distance",
    "interval_coverage",
    "max_sliced_wasserstein",
    "probability_flow",
    "random_directions",
    "slice_distances",
    "sliced_wasserstein",
    "well_separated_mixture",
]
