"""Scores of generated digits by the shipped *clean* classifier, which never saw generated
data: predicted classes (agreement with a request, the rate of a forbidden class) and the
Fréchet distance in its pooled feature space to the even-indexed half of the held-out
split; the odd-indexed half (``Scorer.floor``) scores the floor a perfect sampler would
reach."""

from __future__ import annotations

import torch

from torch import Tensor

import priors

from evaluation import frechet_distance
from experiments.shared.data import Digits

__all__ = ["Scorer"]


class Scorer:
    """The clean classifier's verdicts and features, and the held-out reference."""

    def __init__(self) -> None:
        self.classifier = priors.load_classifier("digits", noisy=False)
        self.x_test, self.y_test = Digits("test").evaluation()
        self.reference = self.features(self.x_test[0::2])
        self.reference_label = self.y_test[0::2]
        self.floor = self.x_test[1::2]  # real held-out digits, not in the reference

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return torch.cat([self.classifier.features(c.float()) for c in x.split(500)])

    @torch.no_grad()
    def predict(self, x: Tensor, features: Tensor | None = None) -> Tensor:
        """Predicted classes (from ``features`` when they are already computed)."""
        features = self.features(x) if features is None else features
        return self.classifier.head(features).argmax(1)

    def score(
        self, x: Tensor, requested: Tensor | None, forbidden: int | None
    ) -> dict[str, float]:
        x = x.clamp(-1, 1)
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError("generated samples contain NaN or Inf")
        feats = self.features(x)
        predicted = self.predict(x, feats)
        out = {"fd": frechet_distance(feats, self.reference)}
        if requested is not None:
            out["agreement"] = float((predicted == requested).float().mean())
        if forbidden is not None:
            allowed = self.reference_label != forbidden
            out["forbidden_rate"] = float((predicted == forbidden).float().mean())
            out["fd_allowed"] = frechet_distance(feats, self.reference[allowed])
        return out
