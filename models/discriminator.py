"""U-Net discriminator with spectral normalization (Real-ESRGAN §3.4, Fig. 6).

Source: Real-ESRGAN ``realesrgan/archs/discriminator_arch.py`` (``UNetDiscriminatorSN``; BasicSR has an
identical copy). Attribute names are upstream's, so the released ``*_netD.pth`` files load strictly:
spectral-norm layers store ``convN.weight_orig``, ``convN.weight_u``, ``convN.weight_v``.

Randomness: as in ``models.rrdbnet``, a ``generator`` draws every initial tensor (conv weights,
biases and the spectral-norm power-iteration vectors u, v); without one, torch's global RNG is used
and the caller seeds it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from models.rrdbnet import init_default_conv_

LRELU_SLOPE = 0.2
DOWNSAMPLE = 8  # three stride-2 convs


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel real/fake logits from a U-Net with spectral-normalized convs.

    Args:
        num_in_ch: input channels.
        num_feat: base feature channels (64 in Real-ESRGAN).
        skip_connection: add the encoder features to the decoder (True in Real-ESRGAN).
        generator: draws every initial tensor; ``None`` uses torch's global RNG.

    Shape:
        (B, num_in_ch, H, W) -> (B, 1, H, W) logits; H and W must be divisible by 8.

    Example:
        >>> d = UNetDiscriminatorSN(num_feat=4, generator=torch.Generator().manual_seed(0))
        >>> d(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_feat: int = 64,
        skip_connection: bool = True,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_in_ch, self.num_feat, self.skip_connection = num_in_ch, num_feat, skip_connection
        nf = num_feat
        # Build on `meta` so neither nn.Conv2d nor spectral_norm consumes global randomness.
        with torch.device("meta"):
            self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
            # Downsample path
            self.conv1 = spectral_norm(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
            self.conv2 = spectral_norm(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
            self.conv3 = spectral_norm(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
            # Upsample path
            self.conv4 = spectral_norm(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
            self.conv5 = spectral_norm(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
            self.conv6 = spectral_norm(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
            # Extra convs
            self.conv7 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
            self.conv8 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
            self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)
        self.to_empty(device="cpu")
        self._init_weights(generator)

    @property
    def hparams(self) -> dict[str, int | bool]:
        """Constructor arguments as a plain dict (for configs and checkpoints)."""
        return {"num_in_ch": self.num_in_ch, "num_feat": self.num_feat, "skip_connection": self.skip_connection}

    def _sn_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6, self.conv7, self.conv8]

    def _init_weights(self, generator: torch.Generator | None) -> None:
        init_default_conv_(self.conv0, generator)
        for conv in self._sn_convs():
            # PyTorch default init of the wrapped weight, then spectral_norm's own u, v draw:
            # normalize(N(0, 1)) of length out_ch (u) and in_ch*k*k (v), as SpectralNorm.apply does.
            nn.init.kaiming_uniform_(conv.weight_orig, a=math.sqrt(5), generator=generator)
            with torch.no_grad():
                for buf in (conv.weight_u, conv.weight_v):
                    buf.normal_(0.0, 1.0, generator=generator)
                    buf.copy_(F.normalize(buf, dim=0, eps=1e-12))
                # spectral_norm keeps a plain `weight` attribute; refresh it off the meta device.
                conv.weight = conv.weight_orig.detach().clone()
        init_default_conv_(self.conv9, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.num_in_ch:
            raise ValueError(f"UNetDiscriminatorSN expects (B, {self.num_in_ch}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % DOWNSAMPLE or x.shape[-1] % DOWNSAMPLE:
            raise ValueError(
                f"UNetDiscriminatorSN needs H and W divisible by {DOWNSAMPLE} (three stride-2 convs), "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )
        act = lambda t: F.leaky_relu(t, LRELU_SLOPE)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))

        # Skips are added after the activation, as upstream.
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0

        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)
