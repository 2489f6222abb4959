"""Weight files: round trips, clear errors, no unpickling; the shipped priors load and beat
the Wiener filter; CFG digits land in the requested class."""

import json
import pickle

import pytest
import torch

import guided
import priors

from priors.weights import read, save

CONFIG = {
    "network": {
        "in_channels": 1,
        "channels": [8, 16],
        "blocks": 1,
        "attention": [False, True],
        "heads": 2,
        "num_classes": 3,
    },
    "schedule": {"name": "cosine"},
    "shape": [1, 8, 8],
}


def _tiny():
    torch.manual_seed(0)
    model = priors.weights.build("denoiser", CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_round_trip_is_exact_and_atomic(tmp_path):
    model = _tiny()
    path = save(model, tmp_path / "tiny.safetensors", "denoiser", CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no temp left
    loaded = read(path)
    assert isinstance(loaded, priors.UNetDenoiser) and loaded.num_classes == 3
    x_t, t = torch.randn(2, 1, 8, 8), torch.tensor([0.2, 0.9])
    label = torch.tensor([1, -1])
    torch.testing.assert_close(loaded(x_t, t, label=label), model.eval()(x_t, t, label=label))


def test_a_flow_matching_network_is_read_back_as_a_flow_denoiser(tmp_path):
    config = {**CONFIG, "schedule": {"name": "rectified"}, "prediction": "flow"}
    torch.manual_seed(0)
    model = priors.weights.build("denoiser", config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loaded = read(save(model, tmp_path / "flow.safetensors", "denoiser", config))
    assert loaded.prediction == "flow" and isinstance(loaded.schedule, priors.RectifiedSchedule)
    x_t = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.3, 0.8, 1.0], dtype=torch.float64)  # 1.0: pure noise, alpha = 0
    label = torch.tensor([0, 2, -1])
    u = loaded.network(x_t.float(), t, label).double()
    expected = x_t - t.view(-1, 1, 1, 1) * u  # x_hat = x_t - t u on the rectified schedule
    torch.testing.assert_close(loaded(x_t, t, label=label), expected)
    flow = priors.FlowDenoiser(lambda x, s, label: loaded.network(x.float(), s, label).double(),
                               priors.RectifiedSchedule())  # fmt: skip
    torch.testing.assert_close(flow(x_t, t, label=label), expected)
    v = priors.weights.build("denoiser", {**config, "prediction": "v"})  # the same weights as v
    v.load_state_dict(loaded.state_dict())
    assert not torch.allclose(v(x_t[:2], t[:2], label=label[:2]), expected[:2])
    with pytest.raises(ValueError, match="prediction must be one of"):
        priors.weights.build("denoiser", {**config, "prediction": "eps"})


def test_corrupt_and_mismatched_files_name_the_file(tmp_path):
    path = save(_tiny(), tmp_path / "tiny.safetensors", "denoiser", CONFIG)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.safetensors is not a readable"):
        read(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        read(garbage)
    # a file whose tensors do not fit the architecture its metadata names (hashed, so that
    # the check that fails is the architecture's)
    other = dict(CONFIG, network=dict(CONFIG["network"], channels=[8, 32]))
    from safetensors.torch import load_file, save_file

    from priors.weights import content_hash

    def write(tensors, metadata):
        save_file(
            tensors,
            str(mismatched),
            metadata=metadata | {"sha256": content_hash(tensors, metadata)},
        )

    tensors = load_file(str(path))
    mismatched = tmp_path / "mismatched.safetensors"
    write(tensors, {"kind": "denoiser", "config": json.dumps(other)})
    with pytest.raises(
        ValueError, match=r"mismatched\.safetensors does not match.*shape mismatches"
    ):
        read(mismatched)
    renamed = {("x" + k if i == 0 else k): v for i, (k, v) in enumerate(tensors.items())}
    write(renamed, {"kind": "denoiser", "config": json.dumps(CONFIG)})
    with pytest.raises(ValueError, match="missing"):
        read(mismatched)
    save_file(tensors, str(mismatched))  # no metadata
    with pytest.raises(ValueError, match="metadata"):
        read(mismatched)
    with pytest.raises(ValueError, match="not a classifier"):
        read(path, kind="classifier")
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "absent.safetensors")


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/pwned-by-weights-test", "w"))


def test_loading_never_unpickles(tmp_path):
    import os

    marker = "/tmp/pwned-by-weights-test"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="evil.safetensors"):
        read(evil)
    assert not os.path.exists(marker)


def test_shipped_priors_and_classifiers_load_in_one_call():
    assert {"digits", "textures"} <= set(priors.available())
    digits = priors.load("digits")
    assert digits.shape == (1, 16, 16) and digits.num_classes == 10
    textures = priors.load("textures")
    assert textures.shape == (1, 32, 32) and textures.num_classes == 3
    for name in ("digits", "textures"):
        for noisy in (True, False):
            classifier = priors.load_classifier(name, noisy=noisy)
            assert classifier.noisy == noisy
    with pytest.raises(ValueError, match="available"):
        priors.load("imagenet")
    natural, flow = priors.load("natural"), priors.load("natural-flow")  # twins
    assert natural.prediction == "v" and isinstance(natural.schedule, priors.CosineSchedule)
    assert flow.prediction == "flow" and isinstance(flow.schedule, priors.RectifiedSchedule)
    shapes = {k: v.shape for k, v in natural.state_dict().items()}
    assert shapes == {k: v.shape for k, v in flow.state_dict().items()}  # the same network
    with pytest.raises(ValueError, match="not a denoiser"):
        priors.load("digits-classifier")


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_guided_digits_land_in_the_requested_class():
    prior = priors.load("digits")
    classifier = priors.load_classifier("digits", noisy=False)
    g = torch.Generator().manual_seed(0)
    label = torch.arange(60) % 10
    x_T = guided.initial_noise(prior.schedule, (60, 1, 16, 16), g)
    x = guided.DDIM()(
        guided.ClassifierFree(prior, 3.0), x_T, guided.time_grid(20), generator=g, label=label
    )
    agreement = float((classifier(x.clamp(-1, 1)).argmax(1) == label).float().mean())
    assert agreement >= 0.9


def test_a_flipped_bit_or_an_edited_schedule_is_refused(tmp_path):
    """The content hash covers every tensor byte and the metadata: a weight moved by one bit
    or a schedule edited in the metadata refuses to load; so does a file without a hash."""
    from safetensors.torch import load_file, safe_open, save_file

    path = save(_tiny(), tmp_path / "tiny.safetensors", "denoiser", CONFIG)
    read(path)  # the intact file loads
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    name = min(k for k in tensors if tensors[k].is_floating_point())
    flipped = {k: v.clone() for k, v in tensors.items()}
    flipped[name].view(-1).view(torch.int32)[0] ^= 1 << 30  # one bit of one weight
    save_file(flipped, str(tmp_path / "flipped.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"flipped\.safetensors does not match its content hash"):
        read(tmp_path / "flipped.safetensors")
    config = json.loads(metadata["config"])
    config["schedule"] = {"name": "linear", "beta_end": 0.03}  # another schedule
    edited = dict(metadata, config=json.dumps(config, sort_keys=True))
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=edited)
    with pytest.raises(ValueError, match=r"edited\.safetensors does not match its content hash"):
        read(tmp_path / "edited.safetensors")
    unhashed = {k: v for k, v in metadata.items() if k != "sha256"}
    save_file(tensors, str(tmp_path / "unhashed.safetensors"), metadata=unhashed)
    with pytest.raises(ValueError, match="no content hash"):
        read(tmp_path / "unhashed.safetensors")


def test_the_shipped_files_carry_their_hash():
    for name in priors.available():
        read(priors.weights.WEIGHTS / f"{name}.safetensors")  # raises on a bad hash
