"""The calibration benchmark's table: particle methods are recognised by their sampler, not
their name, so a new one runs at every --particles count."""

from experiments.benchmarks.posterior_variance import (
    PROBLEMS,
    SAMPLERS,
    gaussian_problem,
    takes_particles,
)


def test_particle_methods_declare_themselves():
    problem = gaussian_problem(**next(iter(PROBLEMS.values())))
    found = {name for name, build in SAMPLERS.items() if takes_particles(build, problem)}
    assert {"MCGdiff", "TDS", "EnKG", "FPS", "FPS (authors' weights)"} <= found
    assert not found & {"DDRM", "PnPDM", "DDPM + PiGDM", "DPSSampler + ZerothOrder"}
