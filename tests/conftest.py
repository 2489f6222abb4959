import pytest
import torch

import priors

from evaluation import well_separated_mixture

torch.set_num_threads(2)

SCHEDULES = {
    "linear": priors.LinearSchedule,
    "cosine": priors.CosineSchedule,
    "edm": priors.EDMSchedule,
    "rectified": priors.RectifiedSchedule,
}


@pytest.fixture(params=sorted(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


__all__ = ["SCHEDULES", "save_tiny_ddpm_pipeline", "well_separated_mixture"]


def save_tiny_ddpm_pipeline(path, size: int) -> None:
    """A tiny random grey diffusers DDPM pipeline of ``size`` x ``size`` saved at ``path``
    (50 training steps), as a user's saved pipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)  # diffusers initialises its weights from the global generator
    unet = UNet2DModel(
        sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(path)
