r"""Blind multi-microphone source separation with a diffusion prior on single sources
(ArrayDPS, Xu et al., ICML 2025), against the same sampler given the true transfer
functions, independent vector analysis and the mixture.

    python -m experiments.inverse.separate             # 20 scenes, sources of two families
    python -m experiments.inverse.separate kind=same   # 20 scenes, both of one family
    python -m experiments.inverse.separate scenes=2 steps=20 methods=[arraydps,iva,mixture]

Scenes (:mod:`experiments.shared.scenes`): ``sources`` held-out synthetic waveforms (the
prior never saw their pitches or resonances) in a simulated shoebox room, heard by a
circular array of ``microphones``. The prior of the :math:`K` sources is the shipped
single-source prior applied to each (:class:`priors.PerChannel`); the mixing is
:class:`operators.ConvolutiveTransfer` (STFT ``transfer.n_fft`` / ``transfer.hop``, filters
of ``transfer.taps`` frames). Methods:

The three diffusion methods run ``steps`` DDPM steps of the sources' prior guided by
:class:`guided.ArrayDPS` (step ``settings.<method>.xi``), from AuxIVA's estimate noised to
the level ``settings.<method>.start`` (a warm start, as ArrayDPS's, which rescales IVA's
estimate to their data's RMS 0.057 and noises it to 0.8; ours have an RMS of about 0.06, and
the app starts lower: the config says how the levels were chosen), the levels spaced down to
``sampler.sigma_min`` with Karras et al.'s ``sampler.rho`` (ArrayDPS's 10 and
:math:`10^{-4}`); the settings were chosen on tuning scenes (the config says which):

- ``oracle``: the filters fixed to the true transfer functions' best convolutive-transfer
  fit (fitted jointly from the dry sources to the noise-free mixture); the upper reference.
  Its filters map dry sources, so IVA's estimates of the reverberant images are a poorer
  start for it than for the blind methods: it starts higher.
- ``arraydps``: the filters unknown, first fitted to AuxIVA's estimate, then re-estimated at
  every step by forward convolutive prediction of each source alone (ArrayDPS's estimator).
- ``em``: the same with the joint least-squares fit of all sources' filters
  (:class:`guided.FitMStep` with ``joint=True``: the M-step of fast diffusion EM under the
  weighted model).
- ``iva``: AuxIVA (Ono, 2011) as ``pyroomacoustics.bss.auxiva`` implements it (Laplace
  model; OverIVA when there are more microphones than sources), ``iva.iterations``
  iterations on :func:`operators.transfer.stft` with window ``iva.n_fft`` (hop a quarter),
  projected back onto the reference microphone; also the diffusion methods' start.
- ``mixture``: the reference microphone's signal as every source's estimate.

The diffusion methods' estimate of each source is its image at the reference microphone
through the final filters (refitted once on the final sample), as ArrayDPS outputs. Score:
SI-SDR (zero-mean, Le Roux et al. 2019) of each source against its image at the reference
microphone, after the best permutation; its improvement over the mixture's; per method the
mean over sources and scenes, and the share of the mixture-to-oracle gap closed,
:math:`\Delta_{method} / \Delta_{oracle}` of the mean improvements. Writes
``metrics.json``, ``results.csv`` (per scene and method), ``table.md`` and
``separation.png`` (one scene: each source's target and every method's estimate, as
waveforms and spectrograms).
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import numpy as np
import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

from experiments.shared.metrics import si_sdr
from experiments.shared.report import means_by_method, progress, serve, write_rows
from experiments.shared.runs import launch, write_metrics
from experiments.shared.scenes import KINDS, Scene, Scenes
from operators.transfer import istft, stft

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

METHODS = ("oracle", "arraydps", "em", "iva", "mixture")
SAMPLED = ("oracle", "arraydps", "em")


def _check(cfg: DictConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise ValueError(f"methods must be some of {list(METHODS)}, got {list(cfg.methods)}")
    if cfg.kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {cfg.kind!r}")
    for key, value in (("scenes", cfg.scenes), ("steps", cfg.steps),
                       ("iva.iterations", cfg.iva.iterations)):  # fmt: skip
        if int(value) < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if int(cfg.first) < 0:
        raise ValueError(f"first must be >= 0, got {cfg.first}")
    if not 0 <= int(cfg.figure_scene) < int(cfg.scenes):
        raise ValueError(
            f"figure_scene must be a position among the {cfg.scenes} scenes scored (0 to "
            f"{int(cfg.scenes) - 1}), got {cfg.figure_scene}"
        )
    values = [("sampler.rho", cfg.sampler.rho), ("sampler.sigma_min", cfg.sampler.sigma_min)]
    for method in SAMPLED:
        node = cfg.settings[method]
        values += [(f"settings.{method}.xi", node.xi), (f"settings.{method}.start", node.start)]
    for key, value in values:
        if not (np.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{key} must be a finite number > 0, got {value}")
    for method in SAMPLED:
        if not float(cfg.settings[method].start) > float(cfg.sampler.sigma_min):
            raise ValueError(f"settings.{method}.start must be above sampler.sigma_min")
    samples = int(cfg.samples)
    if samples % 16:
        raise ValueError(f"samples must be a multiple of 16 (the U-Net's factor), got {samples}")
    n_fft = int(cfg.iva.n_fft)
    if n_fft < 2 or n_fft % 2 or n_fft > samples:
        raise ValueError(f"iva.n_fft must be even and at most samples ({samples}), got {n_fft}")


def scenes(cfg: DictConfig) -> Scenes:
    return Scenes(
        str(cfg.kind),
        sources=int(cfg.sources),
        microphones=int(cfg.microphones),
        samples=int(cfg.samples),
        rate=int(cfg.rate),
        rt60=tuple(cfg.rt60),
        snr=float(cfg.snr),
        seed=int(cfg.seed),
    )


def transfer(cfg: DictConfig) -> operators.ConvolutiveTransfer:
    """The mixing operator, its filters at the reference microphone's (the blind start)."""
    t = cfg.transfer
    return operators.ConvolutiveTransfer(
        int(cfg.sources), int(cfg.microphones), int(cfg.samples),
        n_fft=int(t.n_fft), hop=int(t.hop), taps=int(t.taps),
    )  # fmt: skip


def iva(mixture: Tensor, sources: int, n_fft: int, iterations: int) -> Tensor:
    r"""AuxIVA's sources :math:`(K, T)` from a mixture :math:`(M, T)`, projected back onto
    microphone 0, on :func:`operators.transfer.stft`'s transform (hop ``n_fft // 4``)."""
    import pyroomacoustics as pra  # the audio extra: imported where it is used

    hop = n_fft // 4
    spec = stft(mixture.double(), n_fft, hop)  # (M, F, N)
    frames = spec.permute(2, 1, 0).numpy()  # (N, F, M), pyroomacoustics' layout
    separated = pra.bss.auxiva(frames, n_src=sources, n_iter=iterations, proj_back=True)
    if not np.isfinite(separated).all():
        raise FloatingPointError(
            "AuxIVA returned NaN or Inf (a noiseless mixture of fewer sources than microphones "
            "has a singular covariance)"
        )
    out = torch.from_numpy(np.ascontiguousarray(separated)).permute(2, 1, 0)  # (K, F, N)
    return istft(out, n_fft, hop, mixture.shape[-1])


def start_grid(
    schedule: priors.Schedule, steps: int, level: float, rho: float, sigma_min: float
) -> Tensor:
    r"""``steps`` DDPM steps from the time of noise level :math:`\bar\sigma =` ``level``
    down to 0, the levels spaced as Karras et al.'s with ``rho`` and ``sigma_min``
    (ArrayDPS's :math:`\rho = 10`, :math:`\sigma_{min} = 10^{-4}`)."""
    grid = guided.time_grid(
        steps + 1, "karras", schedule=schedule, rho=rho, sigma_min=sigma_min, sigma_max=level
    )
    return grid[1:]  # the grid's first time is t = 1, before the spacing from ``level``


def separate(
    cfg: DictConfig,
    prior: priors.Denoiser,
    method: str,
    scene: Scene,
    start: Tensor | None,
    seed: int,
) -> tuple[Tensor, priors.Cost]:
    """One scene's estimates :math:`(K, T)` of the sources at the reference microphone, given
    AuxIVA's estimate ``start`` :math:`(K, T)` of the scene (the ``iva`` method's, and the
    diffusion methods' warm start; None for ``mixture``)."""
    cost = priors.Cost()
    y = torch.from_numpy(scene.mixture).double()
    k = int(cfg.sources)
    if method == "mixture":
        return y[0].expand(k, -1).clone(), cost
    if start is None:
        raise ValueError(f"{method} needs AuxIVA's estimate of the scene (start)")
    if method == "iva":
        return start, cost
    t = cfg.transfer
    op = transfer(cfg)
    fit = {"ridge": float(t.ridge), "epsilon": float(t.epsilon)}
    m_step = guided.FitMStep(joint=method == "em", **fit)
    init = start[None]
    if method == "oracle":  # the best CTF filters of the true rooms
        clean = torch.from_numpy(scene.images.sum(0)).double()
        op.fit(torch.from_numpy(scene.dry)[None].double(), clean[None], joint=True, **fit)
    else:  # the filters of the warm start
        m_step(op, init, y[None], 1.0)
    node = cfg.settings[method]
    term = guided.ArrayDPS(op, y, float(node.xi), m_step, estimate=method != "oracle")
    sources = priors.PerChannel(prior, k)
    ts = start_grid(
        prior.schedule, int(cfg.steps), float(node.start), float(cfg.sampler.rho),
        float(cfg.sampler.sigma_min),
    )  # fmt: skip
    alpha, sigma = prior.schedule(ts[0])
    g = torch.Generator().manual_seed(seed)
    x_T = (alpha * init + sigma * torch.randn(init.shape, generator=g, dtype=init.dtype)).float()
    x = guided.DDPM()(
        guided.GuidedDenoiser(sources, term), x_T, ts, cost=cost,
        generator=torch.Generator().manual_seed(seed + 1),
    )  # fmt: skip
    x = x.detach().double()
    if method != "oracle":  # the filters of the final sample
        m_step(op, x, y[None], 1.0)
    with torch.no_grad():
        return op.images(x)[0, :, 0], cost


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Separates every scene by every method; writes the results and the figure."""
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    prior = priors.from_path(str(cfg.prior))
    shape = tuple(getattr(prior, "shape", ()))
    if len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"prior must be a single-source waveform prior (1, T), got {shape}")
    world = scenes(cfg)
    rows: list[dict[str, Any]] = []
    shown: dict[str, Tensor] = {}
    bar = progress(int(cfg.scenes) * len(cfg.methods), "scenes x methods", "run")
    needs_iva = any(method != "mixture" for method in cfg.methods)
    for position in range(int(cfg.scenes)):
        index = int(cfg.first) + position
        scene = world[index]
        targets = torch.from_numpy(scene.targets).double()[None]
        mixture = torch.from_numpy(scene.mixture).double()
        base = si_sdr(mixture[0].expand_as(targets[0])[None], targets)[0][0]
        start = time.perf_counter()  # AuxIVA once per scene; its time counts for its users
        warm = (
            iva(mixture, int(cfg.sources), int(cfg.iva.n_fft), int(cfg.iva.iterations))
            if needs_iva
            else None
        )
        iva_wall = time.perf_counter() - start
        for method in cfg.methods:
            start = time.perf_counter()
            estimate, cost = separate(
                cfg, prior, method, scene, warm, int(cfg.seed) * 7919 + index
            )
            wall = time.perf_counter() - start + (iva_wall if method != "mixture" else 0.0)
            scores, order = si_sdr(estimate[None], targets)
            scores = scores[0]
            rows.append(
                {
                    "scene": index,
                    "families": "+".join(scene.families),
                    "rt60": scene.rt60,
                    "method": method,
                    "si_sdr": float(scores.mean()),
                    "si_sdr_i": float((scores - base).mean()),
                    "nfe": cost.nfe,
                    "vjp": cost.vjp,
                    "wall_s": wall,
                }
            )
            if position == int(cfg.figure_scene):  # matched to the targets
                shown[method] = estimate[order[0]]
            bar.update()
            log.info(
                "scene %d (%s): %s, SI-SDR %.2f dB, improvement %.2f dB (%.1f s)", index,
                rows[-1]["families"], method, rows[-1]["si_sdr"], rows[-1]["si_sdr_i"], wall,
            )  # fmt: skip
    bar.close()
    summary = summarise(rows, list(cfg.methods))
    write(rows, summary, cfg, out_dir)
    figure(world[int(cfg.first) + int(cfg.figure_scene)], shown, int(cfg.rate), out_dir)
    metrics = {"summary": summary, "rows": rows}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Means per method and, with the oracle, the share of its improvement reached."""
    summary = means_by_method(rows, methods, ("si_sdr", "si_sdr_i", "nfe", "vjp", "wall_s"))
    if "oracle" in summary:
        gap = summary["oracle"]["si_sdr_i"]
        for s in summary.values():
            s["gap_closed"] = s["si_sdr_i"] / gap if gap > 0 else float("nan")
    return summary


def write(
    rows: list[dict[str, Any]], summary: dict[str, dict[str, float]], cfg: DictConfig, out: Path
) -> None:
    write_rows(rows, out / "results.csv")
    lines = [
        (
            f"Separation, prior {cfg.prior}, {cfg.scenes} {cfg.kind} scenes ({cfg.sources} "
            f"sources, {cfg.microphones} microphones, RT60 {cfg.rt60[0]}-{cfg.rt60[1]} s, "
            f"{cfg.samples} samples at {cfg.rate} Hz), DDPM {cfg.steps} steps from AuxIVA's "
            "estimate"
        ),
        "",
        "| method | SI-SDR (dB) | SI-SDR improvement (dB) | gap closed | NFE | VJP | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        gap = f"{s['gap_closed']:.0%}" if "gap_closed" in s else "-"
        lines.append(
            f"| {method} | {s['si_sdr']:.2f} | {s['si_sdr_i']:.2f} | {gap} | {s['nfe']:.0f} | "
            f"{s['vjp']:.0f} | {s['wall_s']:.1f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure(scene: Scene, estimates: dict[str, Tensor], rate: int, out: Path) -> None:
    """Each source's target and every method's estimate of it (``estimates``, their sources
    in the targets' order), as a waveform and a spectrogram; the mixture at the reference
    microphone on top."""
    targets = torch.from_numpy(scene.targets).double()
    panels = [("mixture (mic 0)", [torch.from_numpy(scene.mixture[0])] * len(targets))]
    panels.append(("target", list(targets)))
    for method, estimate in estimates.items():
        if method == "mixture":
            continue
        panels.append((method, list(estimate)))
    k = len(targets)
    fig, axes = plt.subplots(len(panels), 2 * k, figsize=(3.2 * 2 * k, 1.5 * len(panels)))
    axes = np.asarray(axes).reshape(len(panels), 2 * k)
    seconds = np.arange(scene.mixture.shape[-1]) / rate
    levels = spectrogram_levels(scene.mixture[0], rate)
    for i, (title, signals) in enumerate(panels):
        for j, signal in enumerate(signals):
            wave, spec = axes[i, 2 * j], axes[i, 2 * j + 1]
            wave.plot(seconds, signal.numpy(), linewidth=0.4)
            wave.set_ylim(-1, 1)
            wave.set_title(f"{title}: source {j + 1}", fontsize=7)
            spec.specgram(signal.numpy(), Fs=rate, cmap="magma", **levels)
            spec.set_title(f"{title}: source {j + 1} ({scene.families[j]})", fontsize=7)
            for ax in (wave, spec):
                ax.tick_params(labelsize=5)
    fig.tight_layout()
    fig.savefig(out / "separation.png", dpi=100)
    plt.close(fig)


def spectrogram_levels(reference: np.ndarray, rate: int) -> dict[str, Any]:
    """Spectrogram settings with one colour scale for every panel: 70 dB below the
    reference's loudest bin (a silent stretch would otherwise stretch each panel's own)."""
    from matplotlib import mlab

    settings = {"NFFT": 256, "noverlap": 192}
    power, _, _ = mlab.specgram(reference, Fs=rate, **settings)
    top = 10 * float(np.log10(power.max()))
    return settings | {"vmin": top - 70, "vmax": top}


@hydra.main(version_base=None, config_path="../configs/separate", config_name="separate")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
