"""Adversarial table: bad arguments to every public constructor and builder.

Each case gives one bad value (infinite, NaN, negative, a fraction where an integer is
meant, a bool, a string, a complex or integer tensor, an empty or mismatched shape) and must
end in an error of the stated type whose message names the argument. None may be accepted:
an accepted bad value is a silent wrong answer waiting to happen.
"""

import math

import numpy as np
import pytest
import torch

import guided
import operators
import priors

from tests.adversarial.objects import F64, gaussian_prior, mask, measurement

INF, NAN = math.inf, math.nan
pytestmark = pytest.mark.filterwarnings("ignore:.*is derivative-free:UserWarning")


def _dps(**kw):
    return guided.DPS(mask(), measurement(), **({"sigma_y": 0.1} | kw))


def _transfer():
    return operators.ConvolutiveTransfer(2, 2, 64, n_fft=16, hop=4, taps=2)


def _kernel():
    return operators.gaussian_kernel(1.0, size=3)


CASES = [
    # --- measurement guidance: the noise level and the step sizes
    ("DPS sigma_y inf", lambda: _dps(sigma_y=INF), ValueError, "sigma_y must be a finite"),
    ("DPS sigma_y nan", lambda: _dps(sigma_y=NAN), ValueError, "sigma_y must be a finite"),
    ("DPS sigma_y < 0", lambda: _dps(sigma_y=-0.1), ValueError, "sigma_y must be a finite"),
    ("DPS sigma_y str", lambda: _dps(sigma_y="0.1"), TypeError, "sigma_y must be a finite"),
    ("DPS zeta inf", lambda: _dps(zeta=INF), ValueError, "zeta must be a finite"),
    ("DPS zeta < 0", lambda: _dps(zeta=-1.0), ValueError, "zeta must be a finite"),
    ("DPS zeta bool", lambda: _dps(zeta=True), TypeError, "zeta must be a finite"),
    ("DPS weight < 0", lambda: _dps(weight=-1.0), ValueError, "weight must be a finite"),
    ("DPS weight inf", lambda: _dps(weight=INF), ValueError, "weight must be a finite"),
    (
        "DPS y int",
        lambda: guided.DPS(mask(), torch.ones(1, 4, dtype=torch.int64), 0.1),
        TypeError,
        "y must be a real floating tensor",
    ),
    (
        "DPS y complex",
        lambda: guided.DPS(mask(), torch.ones(1, 4, dtype=torch.complex128), 0.1),
        TypeError,
        "y must be a real floating tensor",
    ),
    (
        "DPS y inf",
        lambda: guided.DPS(mask(), torch.full((1, 4), INF, dtype=F64), 0.1),
        ValueError,
        "y contains NaN or Inf",
    ),
    (
        "DPS y shape",
        lambda: guided.DPS(mask(), torch.ones(1, 5, dtype=F64), 0.1),
        ValueError,
        r"y must have shape \(B, 4\)",
    ),
    ("DPS y list", lambda: guided.DPS(mask(), [[0.0] * 4], 0.1), TypeError, "y must be"),
    (
        "DPS op not an operator",
        lambda: guided.DPS(torch.eye(4), measurement(), 0.1),
        TypeError,
        "op must be an operators.Operator",
    ),
    (
        "PiGDM sigma_y inf",
        lambda: guided.PiGDM(mask(), measurement(), INF),
        ValueError,
        "sigma_y must be a finite",
    ),
    (
        "PiGDM weight nan",
        lambda: guided.PiGDM(mask(), measurement(), 0.1, weight=NAN),
        ValueError,
        "weight",
    ),
    (
        "PiGDM iterations 2.5",
        lambda: guided.PiGDM(mask(), measurement(), 0.1, iterations=2.5),
        ValueError,
        "iterations must be an integer",
    ),
    (
        "PoissonDPS gain inf",
        lambda: guided.PoissonDPS(mask(), measurement().abs(), gain=INF),
        ValueError,
        "gain must be a finite number > 0",
    ),
    (
        "PoissonDPS gain 0",
        lambda: guided.PoissonDPS(mask(), measurement().abs(), gain=0),
        ValueError,
        "gain must be a finite number > 0",
    ),
    (
        "PoissonDPS y < 0",
        lambda: guided.PoissonDPS(mask(), -measurement().abs() - 1, gain=0.1),
        ValueError,
        "non-negative",
    ),
    (
        "DDRM sigma_y inf",
        lambda: guided.DDRM(mask(), measurement(), INF),
        ValueError,
        "sigma_y must be a finite",
    ),
    ("DDRM eta 1.5", lambda: guided.DDRM(mask(), measurement(), 0.1, eta=1.5), ValueError, "eta"),
    (
        "DDRM eta_b nan",
        lambda: guided.DDRM(mask(), measurement(), 0.1, eta_b=NAN),
        ValueError,
        "eta_b",
    ),
    (
        "DiffPIR lambda inf",
        lambda: guided.DiffPIR(mask(), measurement(), 0.1, lambda_=INF),
        ValueError,
        "lambda_ must be a finite",
    ),
    (
        "DiffPIR lambda 0",
        lambda: guided.DiffPIR(mask(), measurement(), 0.1, lambda_=0),
        ValueError,
        "lambda_ must be a finite number > 0",
    ),
    (
        "DiffPIR zeta 2",
        lambda: guided.DiffPIR(mask(), measurement(), 0.1, zeta=2.0),
        ValueError,
        r"zeta must be a finite number in \[0, 1\]",
    ),
    (
        "DiffPIR iterations 0",
        lambda: guided.DiffPIR(mask(), measurement(), 0.1, iterations=0),
        ValueError,
        "iterations must be an integer >= 1",
    ),
    (
        "DDNM noisy",
        lambda: guided.DDNM(gaussian_prior(), mask(), measurement(), 0.1),
        ValueError,
        "sigma_y must be 0",
    ),
    (
        "DDNMPlus cutoff 1",
        lambda: guided.DDNMPlus(mask(), measurement(), 0.1, cutoff=1.0),
        ValueError,
        r"cutoff must be a finite number in \[0, 1\)",
    ),
    (
        "DDNMPlus sigma_y nan",
        lambda: guided.DDNMPlus(mask(), measurement(), NAN),
        ValueError,
        "sigma_y",
    ),
    (
        "Replacement sigma_y inf",
        lambda: guided.Replacement(mask(), measurement(), INF),
        ValueError,
        "sigma_y",
    ),
    (
        "RePaint jump 0",
        lambda: guided.RePaint(mask(), measurement(), jump=0),
        ValueError,
        "jump must be an integer >= 1",
    ),
    (
        "RePaint resamplings 2.5",
        lambda: guided.RePaint(mask(), measurement(), resamplings=2.5),
        ValueError,
        "resamplings must be an integer",
    ),
    (
        "RePaint jump True",
        lambda: guided.RePaint(mask(), measurement(), jump=True),
        TypeError,
        "jump must be an integer",
    ),
    (
        "MCGdiff sigma_y inf",
        lambda: guided.MCGdiff(mask(), measurement(), INF),
        ValueError,
        "sigma_y must be a finite",
    ),
    (
        "MCGdiff particles 0",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, particles=0),
        ValueError,
        "particles must be an integer >= 1",
    ),
    (
        "MCGdiff particles 1.5",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, particles=1.5),
        ValueError,
        "particles must be an integer",
    ),
    (
        "MCGdiff kappa 0",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, kappa=0),
        ValueError,
        "kappa must be",
    ),
    (
        "MCGdiff eta 0",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, eta=0),
        ValueError,
        "eta must be",
    ),
    (
        "MCGdiff ess 0",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, ess=0),
        ValueError,
        "ess must be",
    ),
    (
        "MCGdiff below 1",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, below=1.0),
        ValueError,
        "below must be",
    ),
    (
        "MCGdiff adapt_grid 1",
        lambda: guided.MCGdiff(mask(), measurement(), 0.1, adapt_grid=1),
        TypeError,
        "adapt_grid must be True or False",
    ),
    (
        "TDS sigma_y inf",
        lambda: guided.TDS(mask(), measurement(), INF),
        ValueError,
        "sigma_y must be a finite",
    ),
    ("TDS sigma_y 0", lambda: guided.TDS(mask(), measurement(), 0.0), ValueError, "sigma_y > 0"),
    ("TDS ess 2", lambda: guided.TDS(mask(), measurement(), 0.1, ess=2.0), ValueError, "ess"),
    (
        "TDS iterations 1.5",
        lambda: guided.TDS(mask(), measurement(), 0.1, twist="tweedie", iterations=1.5),
        ValueError,
        "iterations",
    ),
    (
        "TDS twist None",
        lambda: guided.TDS(mask(), measurement(), 0.1, twist=None),
        ValueError,
        "twist",
    ),
    (
        "EnKG particles 1",
        lambda: guided.EnKG(mask(), measurement(), particles=1),
        ValueError,
        "particles",
    ),
    (
        "EnKG scale inf",
        lambda: guided.EnKG(mask(), measurement(), scale=INF),
        ValueError,
        "scale must be a finite",
    ),
    (
        "EnKG interval reversed",
        lambda: guided.EnKG(mask(), measurement(), interval=(0.5, 0.1)),
        ValueError,
        "interval",
    ),
    (
        "EnKG interval > 1",
        lambda: guided.EnKG(mask(), measurement(), interval=(0.0, 2.0)),
        ValueError,
        "interval",
    ),
    (
        "ZerothOrder queries 0",
        lambda: guided.ZerothOrder(mask(), measurement(), 0.1, queries=0),
        ValueError,
        "queries must be an integer >= 1",
    ),
    (
        "ZerothOrder smoothing inf",
        lambda: guided.ZerothOrder(mask(), measurement(), 0.1, smoothing=INF),
        ValueError,
        "smoothing must be a finite",
    ),
    (
        "ZerothOrder zeta nan",
        lambda: guided.ZerothOrder(mask(), measurement(), 0.1, zeta=NAN),
        ValueError,
        "zeta must be a finite",
    ),
    (
        "DPSSampler zeta inf",
        lambda: guided.DPSSampler(mask(), measurement(), zeta=INF),
        ValueError,
        "zeta must be a finite",
    ),
    # --- samplers and grids
    ("DDIM eta 1.5", lambda: guided.DDIM(1.5), ValueError, r"eta must be a finite number in"),
    ("DDIM eta nan", lambda: guided.DDIM(NAN), ValueError, "eta must be a finite"),
    ("DDIM eta str", lambda: guided.DDIM("0.5"), TypeError, "eta must be a finite"),
    (
        "DDIMInversion iterations -1",
        lambda: guided.DDIMInversion(-1),
        ValueError,
        "iterations must be an integer >= 0",
    ),
    ("time_grid steps 2.7", lambda: guided.time_grid(2.7), ValueError, "steps must be an integer"),
    ("time_grid steps 0", lambda: guided.time_grid(0), ValueError, "steps must be an integer"),
    ("time_grid steps str", lambda: guided.time_grid("10"), TypeError, "steps must be an"),
    ("time_grid kind", lambda: guided.time_grid(10, "linear"), ValueError, "kind must be one"),
    (
        "time_grid rho 0",
        lambda: guided.time_grid(10, "karras", schedule=priors.EDMSchedule(), rho=0),
        ValueError,
        "rho must be a finite number > 0",
    ),
    (
        "time_grid sigma_min inf",
        lambda: guided.time_grid(10, "karras", schedule=priors.EDMSchedule(), sigma_min=INF),
        ValueError,
        "sigma_min must be a finite",
    ),
    (
        "time_grid sigma_max inf",
        lambda: guided.time_grid(10, "karras", schedule=priors.EDMSchedule(), sigma_max=INF),
        ValueError,
        "sigma_max must be a finite",
    ),
    (
        "time_grid sigma_max str",
        lambda: guided.time_grid(10, "karras", schedule=priors.EDMSchedule(), sigma_max="80"),
        TypeError,
        "sigma_max must be a",
    ),
    (
        "check_grid increasing",
        lambda: guided.check_grid(torch.tensor([0.0, 1.0])),
        ValueError,
        "ts must be strictly decreasing",
    ),
    (
        "check_grid nan",
        lambda: guided.check_grid(torch.tensor([1.0, NAN, 0.0])),
        ValueError,
        "ts must be finite",
    ),
    (
        "check_grid > 1",
        lambda: guided.check_grid(torch.tensor([2.0, 0.0])),
        ValueError,
        r"ts must be finite and lie in \[0, 1\]",
    ),
    # --- other guidance
    (
        "ClassifierFree scale inf",
        lambda: guided.ClassifierFree(priors.load("digits"), INF),
        ValueError,
        "scale must be a finite",
    ),
    (
        "ClassifierFree rescale 2",
        lambda: guided.ClassifierFree(priors.load("digits"), 3.0, rescale=2.0),
        ValueError,
        r"rescale must be a finite number in \[0, 1\]",
    ),
    (
        "ClassifierFree interval nan",
        lambda: guided.ClassifierFree(priors.load("digits"), 3.0, interval=(NAN, 1.0)),
        ValueError,
        r"interval\[0\]",
    ),
    (
        "ClassifierFree unconditional prior",
        lambda: guided.ClassifierFree(gaussian_prior(), 3.0),
        ValueError,
        "class-conditional prior",
    ),
    (
        "SAG scale < 0",
        lambda: guided.SelfAttentionGuidance(priors.load("digits"), -1.0),
        ValueError,
        "scale must be a finite number >= 0",
    ),
    (
        "SAG blur 0",
        lambda: guided.SelfAttentionGuidance(priors.load("digits"), 0.5, blur_sigma=0.0),
        ValueError,
        "blur_sigma must be a finite number > 0",
    ),
    (
        "ClassifierGuidance scale nan",
        lambda: guided.ClassifierGuidance(priors.load_classifier("digits", True), 3, NAN),
        ValueError,
        "scale must be a finite",
    ),
    (
        "ClassifierGuidance label 10",
        lambda: guided.ClassifierGuidance(priors.load_classifier("digits", True), 10, 1.0),
        ValueError,
        "label",
    ),
    (
        "SafetyGuidance scale < 0",
        lambda: guided.SafetyGuidance(priors.load_classifier("digits", True), 7, -1.0),
        ValueError,
        "scale must be a finite",
    ),
    (
        "ValueGuidance scale inf",
        lambda: guided.ValueGuidance(priors.Critic(3, 2), torch.zeros(4, 3), INF),
        ValueError,
        "scale must be a finite",
    ),
    (
        "ValueGuidance state nan",
        lambda: guided.ValueGuidance(priors.Critic(3, 2), torch.full((4, 3), NAN), 1.0),
        ValueError,
        "NaN",
    ),
    (
        "GuidedDenoiser no terms",
        lambda: guided.GuidedDenoiser(gaussian_prior()),
        ValueError,
        "at least one guidance term",
    ),
    (
        "GuidedDenoiser bad term",
        lambda: guided.GuidedDenoiser(gaussian_prior(), mask()),
        TypeError,
        "terms must be guided.Guidance",
    ),
    (
        "LeastSquaresMStep reg < 0",
        lambda: guided.LeastSquaresMStep(reg=-1.0),
        ValueError,
        "reg must be a finite number >= 0",
    ),
    (
        "LeastSquaresMStep tol nan",
        lambda: guided.LeastSquaresMStep(tol=NAN),
        ValueError,
        "tol must be",
    ),
    (
        "GradientMStep lr 0",
        lambda: guided.GradientMStep(lr=0.0),
        ValueError,
        "lr must be a finite number > 0",
    ),
    (
        "GradientMStep steps 1.5",
        lambda: guided.GradientMStep(steps=1.5),
        ValueError,
        "steps must be an integer",
    ),
    # --- operators
    (
        "MatrixOperator complex",
        lambda: operators.MatrixOperator(torch.eye(2) * 1j),
        TypeError,
        "A must be a real matrix",
    ),
    (
        "MatrixOperator nan",
        lambda: operators.MatrixOperator(torch.full((2, 2), NAN)),
        ValueError,
        "A contains NaN",
    ),
    (
        "MatrixOperator 1-D",
        lambda: operators.MatrixOperator(torch.ones(3)),
        ValueError,
        "A must be a non-empty matrix",
    ),
    (
        "Inpainting non-binary",
        lambda: operators.Inpainting(torch.tensor([0.5, 1.0])),
        ValueError,
        "mask must be binary",
    ),
    (
        "Inpainting complex",
        lambda: operators.Inpainting(torch.ones(2, dtype=torch.complex64)),
        TypeError,
        "mask must be real",
    ),
    ("Inpainting empty", lambda: operators.Inpainting(torch.ones(0)), ValueError, "mask"),
    (
        "Inpainting in_shape 0",
        lambda: operators.Inpainting(torch.ones(1), (0,)),
        ValueError,
        "in_shape must be an integer >= 1",
    ),
    (
        "Outpainting fills",
        lambda: operators.Outpainting((1, 4, 4), 0, 0, 4, 4),
        ValueError,
        "nothing to outpaint",
    ),
    (
        "Outpainting top 1.5",
        lambda: operators.Outpainting((1, 4, 4), 1.5, 0, 2, 2),
        ValueError,
        "top must be an integer",
    ),
    (
        "AveragePoolSR factor 2.5",
        lambda: operators.AveragePoolSR((1, 8, 8), 2.5),
        ValueError,
        "factor must be an integer",
    ),
    (
        "AveragePoolSR factor 3",
        lambda: operators.AveragePoolSR((1, 8, 8), 3),
        ValueError,
        "does not divide",
    ),
    (
        "BicubicSR factor 2.5",
        lambda: operators.BicubicSR((1, 8, 8), 2.5),
        ValueError,
        "factor must be an integer",
    ),
    (
        "BicubicSR padding valid",
        lambda: operators.BicubicSR((1, 16, 16), 2, "valid"),
        ValueError,
        "padding",
    ),
    (
        "Colorization weights",
        lambda: operators.Colorization((3, 4, 4), (1.0, 2.0)),
        ValueError,
        "one weight per channel",
    ),
    (
        "Colorization weight inf",
        lambda: operators.Colorization((3, 4, 4), (1.0, INF, 0.0)),
        ValueError,
        "weights must be a finite",
    ),
    (
        "CircularBlur even kernel",
        lambda: operators.CircularBlur(torch.ones(2, 2) / 4, (1, 8, 8)),
        ValueError,
        "kernel sizes must be odd",
    ),
    (
        "CircularBlur negative kernel",
        lambda: operators.CircularBlur(
            torch.tensor([[0.0, -1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), (1, 8, 8)
        ),
        ValueError,
        "kernel has negative entries",
    ),
    (
        "CircularBlur kernel sum",
        lambda: operators.CircularBlur(torch.ones(3, 3), (1, 8, 8)),
        ValueError,
        "kernel must sum to 1",
    ),
    (
        "Blur padding",
        lambda: operators.Blur(_kernel(), (1, 8, 8), "mirror"),
        ValueError,
        "padding must be one of",
    ),
    (
        "Blur in_shape 2-D",
        lambda: operators.Blur(_kernel(), (8, 8)),
        ValueError,
        r"in_shape must be an image shape \(C, H, W\)",
    ),
    (
        "gaussian_kernel nan",
        lambda: operators.gaussian_kernel(NAN),
        ValueError,
        "sigma must be a finite number > 0",
    ),
    (
        "gaussian_kernel 0",
        lambda: operators.gaussian_kernel(0.0),
        ValueError,
        "sigma must be a finite number > 0",
    ),
    (
        "gaussian_kernel size 4",
        lambda: operators.gaussian_kernel(1.0, size=4),
        ValueError,
        "size must be a positive odd",
    ),
    (
        "gaussian_kernel angle inf",
        lambda: operators.gaussian_kernel(1.0, angle=INF),
        ValueError,
        "angle must be a finite",
    ),
    (
        "motion_kernel length < 0",
        lambda: operators.motion_kernel(5, torch.Generator(), length=-1.0),
        ValueError,
        "length must be a finite number > 0",
    ),
    (
        "motion_kernel spread nan",
        lambda: operators.motion_kernel(5, torch.Generator(), spread=NAN),
        ValueError,
        "spread must be a finite",
    ),
    (
        "motion_kernel no generator",
        lambda: operators.motion_kernel(5, None),
        TypeError,
        "generator must be a torch.Generator",
    ),
    (
        "half_mask one row",
        lambda: operators.half_mask(1, 8, "top"),
        ValueError,
        "needs height >= 2",
    ),
    (
        "half_mask keep",
        lambda: operators.half_mask(4, 4, "middle"),
        ValueError,
        "keep must be one of",
    ),
    (
        "box_mask height 2.5",
        lambda: operators.box_mask(2.5, 4, 0, 0, 1, 1),
        ValueError,
        "height must be an integer",
    ),
    ("box_mask too big", lambda: operators.box_mask(4, 4, 2, 2, 3, 3), ValueError, "does not fit"),
    (
        "random_pixel_mask keep nan",
        lambda: operators.random_pixel_mask(4, 4, NAN),
        ValueError,
        "keep must be a finite",
    ),
    (
        "stroke_mask thickness 0",
        lambda: operators.stroke_mask(8, 8, thickness=0),
        ValueError,
        "thickness must be a finite number > 0",
    ),
    (
        "stroke_mask strokes 1.5",
        lambda: operators.stroke_mask(8, 8, strokes=1.5),
        ValueError,
        "strokes must be an integer",
    ),
    (
        "JPEG quality True",
        lambda: operators.JPEG((1, 8, 8), quality=True),
        TypeError,
        "quality must be an integer",
    ),
    (
        "JPEG quality 101",
        lambda: operators.JPEG((1, 8, 8), quality=101),
        ValueError,
        r"quality must be an integer in \[1, 100\]",
    ),
    ("JPEG channels 2", lambda: operators.JPEG((2, 8, 8)), ValueError, "JPEG needs images"),
    (
        "Quantization levels 1",
        lambda: operators.Quantization((4,), levels=1),
        ValueError,
        "levels must be an integer >= 2",
    ),
    (
        "Quantization levels 2.5",
        lambda: operators.Quantization((4,), levels=2.5),
        ValueError,
        "levels must be an integer",
    ),
    (
        "BlackBox not callable",
        lambda: operators.BlackBox(3, (2,), (2,)),
        TypeError,
        "function must be callable",
    ),
    (
        "BlackBox batched 1",
        lambda: operators.BlackBox(np.abs, (2,), (2,), batched=1),
        TypeError,
        "batched must be True or False",
    ),
    (
        "BlackBox in_shape str",
        lambda: operators.BlackBox(np.abs, "ab", (2,)),
        TypeError,
        "in_shape must be a sequence of sizes",
    ),
    (
        "PhaseRetrieval oversampling 0.5",
        lambda: operators.PhaseRetrieval((1, 4, 4), 0.5),
        ValueError,
        "oversampling must be a finite number >= 1",
    ),
    (
        "SaturatingSensor gain inf",
        lambda: operators.SaturatingSensor((4,), gain=INF),
        ValueError,
        "gain must be a finite number > 0",
    ),
    (
        "NonlinearBlur eps 0",
        lambda: operators.NonlinearBlur(_kernel(), (1, 8, 8), eps=0.0),
        ValueError,
        "eps must be a finite number > 0",
    ),
    (
        "NonlinearBlur gamma inf",
        lambda: operators.NonlinearBlur(_kernel(), (1, 8, 8), gamma=INF),
        ValueError,
        "gamma must be a finite",
    ),
    (
        "PlanarKinematics length 0",
        lambda: operators.PlanarKinematics([1.0, 0.0]),
        ValueError,
        "lengths must be a finite number > 0",
    ),
    (
        "PlanarKinematics length str",
        lambda: operators.PlanarKinematics(["a"]),
        TypeError,
        "lengths must be a finite",
    ),
    (
        "PlanarKinematics point 3",
        lambda: operators.PlanarKinematics([1.0, 1.0], points=[3]),
        ValueError,
        r"points must be an integer in \[1, 2\]",
    ),
    (
        "BlindBlur kernel_size 4",
        lambda: operators.BlindBlur((1, 8, 8), kernel_size=4),
        ValueError,
        "kernel_size must be a positive odd",
    ),
    (
        "BlindBlur centring inf",
        lambda: operators.BlindBlur((1, 8, 8), centring=INF),
        ValueError,
        "centring must be a finite",
    ),
    (
        "ChannelGain negative",
        lambda: operators.ChannelGain((2, 4), torch.tensor([1.0, -1.0])),
        ValueError,
        "gain has negative entries",
    ),
    (
        "ChannelGain complex",
        lambda: operators.ChannelGain((2, 4), torch.ones(2) * 1j),
        TypeError,
        "gain must be real",
    ),
    (
        "ChannelMixing rows",
        lambda: operators.ChannelMixing((2, 4, 4), 2, torch.ones(2, 2)),
        ValueError,
        "sum to 1",
    ),
    (
        "ChannelMixing out 0",
        lambda: operators.ChannelMixing((2, 4, 4), 0),
        ValueError,
        "out_channels must be an integer >= 1",
    ),
    (
        "GaussianNoise sigma inf",
        lambda: operators.GaussianNoise(INF),
        ValueError,
        "sigma must be a finite number >= 0",
    ),
    (
        "GaussianNoise sigma str",
        lambda: operators.GaussianNoise("0.1"),
        TypeError,
        "sigma must be a finite",
    ),
    (
        "PoissonNoise gain 0",
        lambda: operators.PoissonNoise(0),
        ValueError,
        "gain must be a finite number > 0",
    ),
    (
        "as_deepinv sigma inf",
        lambda: operators.as_deepinv(mask(), INF),
        ValueError,
        "sigma must be a finite",
    ),
    # --- priors
    (
        "GaussianMixture complex",
        lambda: priors.GaussianMixture(
            torch.ones(1), torch.zeros(1, 2) * 1j, torch.eye(2)[None], priors.LinearSchedule()
        ),
        TypeError,
        "means must be real",
    ),
    (
        "GaussianMixture weights < 0",
        lambda: priors.GaussianMixture(
            torch.tensor([-1.0, 2.0]),
            torch.zeros(2, 2),
            torch.eye(2).expand(2, 2, 2),
            priors.LinearSchedule(),
        ),
        ValueError,
        "weights must be non-negative",
    ),
    (
        "GaussianMixture cov not PSD",
        lambda: priors.GaussianMixture(
            torch.ones(1), torch.zeros(1, 2), -torch.eye(2)[None], priors.LinearSchedule()
        ),
        ValueError,
        "positive semi-definite",
    ),
    (
        "GaussianMixture schedule",
        lambda: priors.GaussianMixture(
            torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], "linear"
        ),
        TypeError,
        "schedule must be a priors.Schedule",
    ),
    (
        "GaussianMixture.sample n 2.5",
        lambda: gaussian_prior().sample(2.5),
        ValueError,
        "n must be an integer",
    ),
    (
        "GaussianMixture.posterior sigma inf",
        lambda: gaussian_prior().posterior(torch.eye(4), torch.zeros(4), INF),
        ValueError,
        "sigma_y must be a finite",
    ),
    (
        "LinearSchedule beta_end 1",
        lambda: priors.LinearSchedule(beta_end=1.0),
        ValueError,
        "beta_end must be a finite number in",
    ),
    (
        "LinearSchedule steps 10.5",
        lambda: priors.LinearSchedule(steps=10.5),
        ValueError,
        "steps must be an integer",
    ),
    (
        "CosineSchedule alpha_min 0",
        lambda: priors.CosineSchedule(alpha_min=0.0),
        ValueError,
        "alpha_min must be",
    ),
    (
        "EDMSchedule rho inf",
        lambda: priors.EDMSchedule(rho=INF),
        ValueError,
        "rho must be a finite",
    ),
    (
        "EDMSchedule sigmas reversed",
        lambda: priors.EDMSchedule(1.0, 0.5),
        ValueError,
        "sigma_min < sigma_max",
    ),
    (
        "DiscreteSchedule increasing",
        lambda: priors.DiscreteSchedule(torch.tensor([0.5, 0.9])),
        ValueError,
        "strictly decreasing",
    ),
    ("as_time str", lambda: priors.as_time("0.5"), TypeError, "t must be a real time"),
    ("as_time bool", lambda: priors.as_time(True), TypeError, "t must be a real time"),
    (
        "as_time complex",
        lambda: priors.as_time(torch.tensor(0.5j)),
        TypeError,
        "t must be a real time",
    ),
    ("as_time 1.5", lambda: priors.as_time(1.5), ValueError, r"t must lie in \[0, 1\]"),
    ("MLP width 0", lambda: priors.MLP(2, width=0), ValueError, "width must be an integer"),
    ("MLP blocks 1.5", lambda: priors.MLP(2, blocks=1.5), ValueError, "blocks must be an"),
    (
        "Critic depth 0",
        lambda: priors.Critic(3, 2, depth=0),
        ValueError,
        "depth must be an integer >= 1",
    ),
    ("Critic output", lambda: priors.Critic(3, 2, output="q"), ValueError, "output must be"),
    (
        "Encoder features True",
        lambda: priors.Encoder((4,), features=True),
        TypeError,
        "features must be an integer",
    ),
    ("load unknown", lambda: priors.load("faces"), ValueError, "no shipped prior 'faces'"),
    (
        "PerChannel on a vector prior",
        lambda: priors.PerChannel(gaussian_prior(), 2),
        ValueError,
        "prior must be a one-channel prior",
    ),
    (
        "PathPlanner threshold nan",
        lambda: operators.PathPlanner((1, 4, 4), torch.tensor([[[0, 0], [3, 3]]]), NAN),
        ValueError,
        "threshold must be a finite",
    ),
    (
        "PathPlanner pairs list",
        lambda: operators.PathPlanner((1, 4, 4), [[[0, 0], [3, 3]]]),
        TypeError,
        "pairs must be an integer tensor",
    ),
    (
        "ArrayDPS xi inf",
        lambda: guided.ArrayDPS(_transfer(), torch.zeros(2, 64, dtype=F64), INF),
        ValueError,
        "xi must be a finite",
    ),
    (
        "ArrayDPS y nan",
        lambda: guided.ArrayDPS(_transfer(), torch.full((2, 64), NAN, dtype=F64)),
        ValueError,
        "y contains NaN or Inf",
    ),
    (
        "FitMStep on a blur",
        lambda: guided.ArrayDPS(
            operators.BlindBlur((1, 6, 6), kernel_size=3), torch.zeros(1, 6, 6, dtype=F64)
        ),
        TypeError,
        "no fit method",
    ),
    (
        "load_classifier unknown",
        lambda: priors.load_classifier("faces", True),
        ValueError,
        "no shipped classifier",
    ),
]


@pytest.mark.parametrize(("thunk", "error", "match"), [c[1:] for c in CASES],
                         ids=[f"refused: {c[0]}" for c in CASES])  # fmt: skip
def test_bad_argument_is_refused_by_name(thunk, error, match):
    with pytest.raises(error, match=match):
        thunk()


def test_the_table_is_large_and_names_unique():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 150, len(names)
