import pytest
import torch

import priors

from evaluation import well_separated_mixture

torch.set_num_threads(2)

SCHEDULES = {
    "linear": priors.LinearSchedule,
    "cosine": priors.CosineSchedule,
    "edm": priors.EDMSchedule,
}


@pytest.fixture(params=sorted(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


__all__ = ["SCHEDULES", "well_separated_mixture"]
