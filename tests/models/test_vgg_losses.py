"""VGG19 extractor (weights resolution and loading), perceptual loss, GAN loss, L1 loss."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.losses import PERCEPTUAL_LAYER_WEIGHTS, PerceptualLoss, gan_loss, l1_loss
from models.vgg import (
    VGG19_ENV_VAR,
    VGG19_LAYER_NAMES,
    VGGFeatureExtractor,
    VGGWeightsNotFoundError,
    resolve_vgg19_weights,
)

# torchvision vgg19().features: conv index -> (out, in) channels (reference doc §3.4, torchvision cfg "E").
VGG19_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256), 16: (256, 256),
    19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
    28: (512, 512), 30: (512, 512), 32: (512, 512), 34: (512, 512),
}  # fmt: skip
MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def fake_vgg_file(tmp_path_factory) -> Path:
    """A file laid out like torchvision's vgg19-dcbb9e9d.pth, with random tensors.

    The classifier tensors are tiny stand-ins (the real ones are 120M floats); the loader ignores them.
    """
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for idx, (cout, cin) in VGG19_CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    state["classifier.0.weight"] = torch.zeros(4, 4)
    state["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def extractor(fake_vgg_file: Path) -> VGGFeatureExtractor:
    return VGGFeatureExtractor(fake_vgg_file)


def test_layer_indices() -> None:
    assert len(VGG19_LAYER_NAMES) == 37
    indices = [VGG19_LAYER_NAMES.index(n) for n in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")]
    assert indices == [2, 7, 16, 25, 34]  # reference doc §3.4
    assert {i for i, n in enumerate(VGG19_LAYER_NAMES) if n.startswith("conv")} == set(VGG19_CONVS)


def test_loads_file_tensors_and_truncates(fake_vgg_file: Path, extractor: VGGFeatureExtractor) -> None:
    state = torch.load(fake_vgg_file, weights_only=True)
    assert len(extractor.features) == 35 and extractor.pretrained
    for idx in VGG19_CONVS:
        assert torch.equal(extractor.features[idx].weight, state[f"features.{idx}.weight"])
        assert torch.equal(extractor.features[idx].bias, state[f"features.{idx}.bias"])
    short = VGGFeatureExtractor(fake_vgg_file, layer_names=("conv2_2", "conv1_2"))
    assert len(short.features) == 8
    assert all(isinstance(short.features[i], torch.nn.MaxPool2d) for i in (4,))
    assert short.features[4].kernel_size == 2 and short.features[4].stride == 2


def test_frozen_and_eval(extractor: VGGFeatureExtractor) -> None:
    extractor.train()
    assert not extractor.training and not extractor.features.training
    assert not any(p.requires_grad for p in extractor.parameters())


def test_features_are_pre_activation_with_input_norm(extractor: VGGFeatureExtractor) -> None:
    """conv1_2 and conv2_2 against a float64 hand computation with torchvision's layer order."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    w = {i: (extractor.features[i].weight.double(), extractor.features[i].bias.double()) for i in VGG19_CONVS}
    h = (x.double() - MEAN) / STD
    conv1_2 = F.conv2d(F.relu(F.conv2d(h, *w[0], padding=1)), *w[2], padding=1)
    h = F.max_pool2d(F.relu(conv1_2), 2, 2)
    conv2_2 = F.conv2d(F.relu(F.conv2d(h, *w[5], padding=1)), *w[7], padding=1)
    feats = extractor(x)
    assert list(feats) == ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"]
    assert (feats["conv1_2"] < 0).any(), "pre-activation features keep negative values"
    torch.testing.assert_close(feats["conv1_2"].double(), conv1_2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats["conv2_2"].double(), conv2_2, rtol=1e-4, atol=1e-5)
    assert feats["conv5_4"].shape == (2, 512, 1, 1)


def test_bad_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "not_vgg.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not_vgg.pth.*missing"):
        VGGFeatureExtractor(path)


def test_resolution_order(tmp_path: Path, fake_vgg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(VGG19_ENV_VAR, raising=False)
    with pytest.raises(VGGWeightsNotFoundError) as err:
        resolve_vgg19_weights(None)
    hub_file = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for fragment in (f"${VGG19_ENV_VAR}: not set", f"torch hub cache {hub_file}", f"Put it at {hub_file}",
                     "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "ImageNet VGG19"):
        assert fragment in message, fragment
    # Hub cache found.
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(fake_vgg_file.read_bytes())
    assert resolve_vgg19_weights(None) == hub_file
    # The environment variable wins over the hub cache; an explicit path wins over both.
    monkeypatch.setenv(VGG19_ENV_VAR, str(fake_vgg_file))
    assert resolve_vgg19_weights(None) == fake_vgg_file
    assert resolve_vgg19_weights(str(hub_file)) == hub_file


def test_random_only_when_asked_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert resolve_vgg19_weights("random") == "random"
    for misspelt in ("Random", "rand", "random "):
        with pytest.raises(VGGWeightsNotFoundError, match="explicit path"):
            resolve_vgg19_weights(misspelt)
    monkeypatch.setenv(VGG19_ENV_VAR, "random")
    with pytest.raises(ValueError, match="only available by passing"):
        resolve_vgg19_weights(None)
    monkeypatch.setenv(VGG19_ENV_VAR, str(tmp_path / "typo.pth"))
    with pytest.raises(VGGWeightsNotFoundError, match="typo.pth: no such file"):
        resolve_vgg19_weights(None)


def test_random_extractor_is_flagged_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.vgg"), pytest.warns(RuntimeWarning, match="RANDOM"):
        vgg = VGGFeatureExtractor("random", layer_names=("conv1_2",))
    assert vgg.pretrained is False
    assert any("RANDOM" in r.message for r in caplog.records)
    with pytest.raises(TypeError):
        VGGFeatureExtractor(None)  # type: ignore[arg-type]


def test_perceptual_loss_zero_for_identical_positive_otherwise(extractor: VGGFeatureExtractor) -> None:
    loss = PerceptualLoss(extractor)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert loss(x, x).item() == 0.0
    assert loss(y, x).item() > 0.0


def test_perceptual_loss_layer_weights(extractor: VGGFeatureExtractor) -> None:
    """sum_l w_l * mean|phi_l(out) - phi_l(gt)|, weights conv1_2 .1, conv2_2 .1, conv3_4..conv5_4 1."""
    assert PERCEPTUAL_LAYER_WEIGHTS == {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0,
                                        "conv5_4": 1.0}
    out = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 1.2 - 0.1  # not clamped
    gt = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fo, fg = extractor(out), extractor(gt)
    expected = sum(w * (fo[n].double() - fg[n].double()).abs().mean() for n, w in
                   {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1, "conv4_4": 1, "conv5_4": 1}.items())
    loss = PerceptualLoss(extractor, perceptual_weight=2.0)
    torch.testing.assert_close(loss(out, gt).double(), 2.0 * expected, rtol=1e-5, atol=0)


def test_perceptual_loss_gradient_flows_to_output_only(extractor: VGGFeatureExtractor) -> None:
    out = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6), requires_grad=True)
    gt = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7), requires_grad=True)
    PerceptualLoss(extractor)(out, gt).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert gt.grad is None


def _bce_with_logits_by_hand(x: torch.Tensor, y: float) -> torch.Tensor:
    """mean(max(x, 0) - x*y + log(1 + exp(-|x|))) in float64: the stable BCE-with-logits formula."""
    x = x.double()
    return (x.clamp(min=0) - x * y + torch.log1p(torch.exp(-x.abs()))).mean()


@pytest.mark.parametrize(("real", "disc"), [(True, True), (False, True), (True, False), (False, False)])
def test_gan_loss(real: bool, disc: bool) -> None:
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(8)) * 3
    expected = _bce_with_logits_by_hand(logits, 1.0 if real else 0.0) * (1.0 if disc else 0.1)
    torch.testing.assert_close(gan_loss(logits, real, disc).double(), expected, rtol=1e-6, atol=1e-7)
    if not disc:
        torch.testing.assert_close(gan_loss(logits, real, disc, weight=1.0).double(), expected / 0.1)


def test_l1_loss() -> None:
    a = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    b = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(10))
    expected = (a.double() - b.double()).abs().sum() / a.numel()
    torch.testing.assert_close(l1_loss(a, b).double(), expected)
    torch.testing.assert_close(l1_loss(a, b, weight=0.5).double(), 0.5 * expected)
    with pytest.raises(ValueError, match="differ"):
        l1_loss(a, b[:, :2])
