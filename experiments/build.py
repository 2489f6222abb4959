"""Building library objects from Hydra config nodes."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces the library's own error.

    Hydra wraps exceptions raised by a ``_target_``'s constructor; a bad config value
    should reach the user as the library's ``ValueError``/``TypeError`` naming the
    parameter, so the wrapped exception is re-raised as it was.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise cause from None
        raise
