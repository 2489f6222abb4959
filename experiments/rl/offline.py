"""Builds one offline data set of :mod:`experiments.rl.datasets` into its cache.

python -m experiments.rl.offline name=bandit       # writes data/offline/bandit-0.npz
python -m experiments.rl.offline name=cheetah_mixed seed=1
"""

from __future__ import annotations

import logging

from pathlib import Path

import hydra

from omegaconf import DictConfig

from experiments.rl.datasets import DEFAULT_DIR, build
from experiments.shared.report import markdown_table, serve
from experiments.shared.runs import launch, write_metrics

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Builds the data set into its cache; its card is the run's metrics."""
    directory = DEFAULT_DIR if cfg.directory is None else Path(cfg.directory)
    log.info("building %s (seed %d) in %s", cfg.name, cfg.seed, directory)
    data = build(str(cfg.name), int(cfg.seed), directory)
    write_metrics(data.card, out_dir)
    return data.card


@hydra.main(version_base=None, config_path="../configs/offline", config_name="offline")
def main(cfg: DictConfig) -> None:
    serve(
        cfg,
        run,
        log,
        lambda card: markdown_table(
            [{k: v for k, v in card.items() if not isinstance(v, dict | list)}]
        ),
    )


if __name__ == "__main__":
    launch(main)
