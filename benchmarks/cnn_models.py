"""The networks and inputs of ``benchmarks/cnn.py``: LeNet (tanh, ReLU), ResNet-8 and a pre-LN transformer block.

Their layouts are described in the docstring of ``benchmarks/cnn.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import fishertut as ft

__all__ = ["lenet", "BasicBlock", "resnet8", "PreLNBlock", "digits"]


def lenet(activation: str, seed: int = 0) -> nn.Sequential:
    """The LeNet-style CNN of the module docstring (``ft.lab.models.lenet`` on images), float32, eval mode."""
    return ft.lab.models.lenet(activation, seed=seed, dtype=torch.float32, flat_inputs=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and ReLU, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        """ReLU of the block's output plus the shortcut."""
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.short(x))


def resnet8(seed: int = 0) -> nn.Module:
    """ResNet-8 for 3×32×32 inputs (module docstring), batch-norm statistics from 256 random inputs, eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    with torch.no_grad():
        model.train()(torch.randn(256, 3, 32, 32))
    return model.eval()


class PreLNBlock(nn.Module):
    """A pre-LN transformer block with a classification head (module docstring)."""

    def __init__(self, width: int = 32, heads: int = 4, tokens: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.head = nn.Linear(width * tokens, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Attention then MLP, each on the layer-normed stream and added back; logits from all tokens."""
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(x.flatten(1))


def digits(n: int) -> Tensor:
    """``n`` real MNIST digits ``(n, 1, 28, 28)`` (the 5,000 of ``ft.lab.data.load_mnist()``, cycled)."""
    data = ft.lab.data.load_mnist()
    pool = torch.cat([data.train_x, data.test_x]).float()
    return pool.repeat(-(-n // pool.shape[0]), 1)[:n].reshape(n, 1, 28, 28).contiguous()
