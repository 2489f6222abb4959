"""Guidance rules and samplers.

Every sampler runs any :class:`priors.Denoiser`, so a guidance rule written as a denoiser
wrapper works with every sampler.
"""

from guided.apg import APG
from guided.array_dps import ArrayDPS
from guided.autoguidance import AutoGuidance
from guided.cfg import ClassifierFree, ComposableFree, DualClassifierFree
from guided.cfg_zero_star import CFGZeroStar
from guided.cfgpp import CFGPlusPlus
from guided.classifier import ClassifierGuidance
from guided.daps import DAPS
from guided.dcps import DCPS
from guided.ddim import DDIM, DDPM
from guided.ddnm import DDNM
from guided.ddnm_plus import DDNMPlus
from guided.ddrm import DDRM
from guided.diffpir import DiffPIR
from guided.dpm_solver import DPMSolver
from guided.dps import DPS, DPSSampler, PoissonDPS
from guided.em import DiffusionEM, ExpectationMaximization
from guided.enkg import EnKG
from guided.flow_dps import FlowDPS
from guided.fps import FPS
from guided.guidance import Guidance, GuidedDenoiser
from guided.heun import FlowHeun, Heun
from guided.inversion import DDIMInversion
from guided.latent import Decoded
from guided.latent_daps import LatentDAPS
from guided.latent_dps import LatentDPS
from guided.m_step import FitMStep, GradientMStep, LeastSquaresMStep, MStep
from guided.mcgdiff import MCGdiff
from guided.measurements import DivergenceWarning, measurements, residuals
from guided.mmps import MMPS
from guided.ot_ode import OTODE
from guided.pag import PAG
from guided.pigdm import PiGDM
from guided.pnp_flow import PnPFlow
from guided.pnpdm import PnPDM
from guided.projection import Projection
from guided.psld import PSLD, Gluing
from guided.reddiff import REDDiff
from guided.repaint import RePaint
from guided.replacement import Replacement
from guided.resample import ReSample
from guided.safety import SafetyGuidance
from guided.sag import SelfAttentionGuidance
from guided.sampler import Run, Sampler, SamplerState, Step, initial_noise
from guided.smc import ParticleSampler
from guided.surrogate import SurrogateLikelihood
from guided.tds import TDS
from guided.time import check_grid, level_times, time_grid
from guided.tmpd import TMPD
from guided.value import NoisyValueGuidance, ValueGuidance
from guided.zeroth_order import ZerothOrder

__all__ = [
    "APG",
    "DAPS",
    "DCPS",
    "DDIM",
    "DDNM",
    "DDPM",
    "DDRM",
    "DPS",
    "FPS",
    "MMPS",
    "OTODE",
    "PAG",
    "PSLD",
    "TDS",
    "TMPD",
    "ArrayDPS",
    "AutoGuidance",
    "CFGPlusPlus",
    "CFGZeroStar",
    "ClassifierFree",
    "ClassifierGuidance",
    "ComposableFree",
    "DDIMInversion",
    "DDNMPlus",
    "DPMSolver",
    "DPSSampler",
    "Decoded",
    "DiffPIR",
    "DiffusionEM",
    "DivergenceWarning",
    "DualClassifierFree",
    "EnKG",
    "ExpectationMaximization",
    "FitMStep",
    "FlowDPS",
    "FlowHeun",
    "Gluing",
    "GradientMStep",
    "Guidance",
    "GuidedDenoiser",
    "Heun",
    "LatentDAPS",
    "LatentDPS",
    "LeastSquaresMStep",
    "MCGdiff",
    "MStep",
    "NoisyValueGuidance",
    "ParticleSampler",
    "PiGDM",
    "PnPDM",
    "PnPFlow",
    "PoissonDPS",
    "Projection",
    "REDDiff",
    "RePaint",
    "ReSample",
    "Replacement",
    "Run",
    "SafetyGuidance",
    "Sampler",
    "SamplerState",
    "SelfAttentionGuidance",
    "Step",
    "SurrogateLikelihood",
    "ValueGuidance",
    "ZerothOrder",
    "check_grid",
    "initial_noise",
    "level_times",
    "measurements",
    "residuals",
    "time_grid",
]
