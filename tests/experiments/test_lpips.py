"""LPIPS from a local AlexNet backbone file: the file's weights are the ones used, nothing is
fetched, and a missing or wrong file is refused naming it."""

import pytest
import torch

from torchvision.models import alexnet

from experiments.shared.metrics import LPIPS


def _backbone(path, seed):
    torch.manual_seed(seed)
    torch.save(alexnet(weights=None).state_dict(), path)
    return path


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_lpips_uses_the_backbone_file(tmp_path):
    metric = LPIPS(_backbone(tmp_path / "a.pth", 0))
    state = torch.load(tmp_path / "a.pth", weights_only=True)
    torch.testing.assert_close(metric.network.net.slice1[0].weight, state["features.0.weight"])
    torch.testing.assert_close(
        getattr(metric.network.net.slice5, "10").bias, state["features.10.bias"]
    )
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 64, 64, generator=g) * 2 - 1
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    same, apart = metric(x, x), metric(noisy, x)
    assert same.shape == (3,) and float(same.abs().max()) < 1e-6
    assert bool((apart > 0).all())
    torch.testing.assert_close(metric(x, noisy), apart)  # symmetric
    rgb = x.expand(-1, 3, -1, -1)
    torch.testing.assert_close(metric(noisy.expand(-1, 3, -1, -1), rgb), apart)  # grey = 3 equal
    other = LPIPS(_backbone(tmp_path / "b.pth", 1))(noisy, x)
    assert float((other - apart).abs().max()) > 1e-4  # another backbone, another score


def test_lpips_refuses_a_missing_or_wrong_file_and_bad_shapes(tmp_path):
    with pytest.raises(FileNotFoundError, match="no backbone file .*nothing.pth"):
        LPIPS(tmp_path / "nothing.pth")
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth does not match its architecture"):
        LPIPS(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth is not a readable checkpoint"):
        LPIPS(tmp_path / "junk.pth")
    metric = LPIPS(_backbone(tmp_path / "a.pth", 0))
    with pytest.raises(ValueError, match="lpips takes two"):
        metric(torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_the_restore_app_scores_lpips_with_a_backbone_file(tmp_path):
    from hydra import compose, initialize_config_module

    from experiments.inverse import restore

    backbone = _backbone(tmp_path / "alex.pth", 0)
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        cfg = compose(
            "restore",
            overrides=[
                "prior=textures", "images=2", "samples=2", "steps=3", "threads=1",
                "tasks=[box]", "run=[ddrm]", f"lpips={backbone}",
            ],
        )  # fmt: skip
    (tmp_path / "run").mkdir()
    results = restore.run(cfg, tmp_path / "run")["tasks"]["box"]
    for name in ("pinv", "ddrm"):
        assert 0 <= results[name]["lpips"] and 0 <= results[name]["lpips_sample"]
    assert "LPIPS mean" in (tmp_path / "run" / "table.md").read_text()
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        cfg = compose(
            "restore", overrides=["measurement=small.png", "scale=4", f"lpips={backbone}"]
        )
    with pytest.raises(ValueError, match="lpips= scores against a ground truth"):
        restore.run(cfg, tmp_path / "measured")
    assert not (tmp_path / "measured" / "metrics.json").exists()
