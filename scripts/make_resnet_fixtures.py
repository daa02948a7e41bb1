#!/usr/bin/env python3
"""Writes the PyTorch-parity fixtures of agc-core's ResNet (crates/agc-core/tests/fixtures/).

Two small torchvision ResNets, one of BasicBlocks and one of Bottlenecks, both with projection
shortcuts (`downsample`) and randomised batch-norm affine parameters and running statistics, are
saved as `.pth` and `.safetensors`, with one input batch and their eval-mode outputs.

torchvision's ResNet hard-codes 64 channels in the stem and the stage widths 64/128/256/512;
to keep the fixtures small the stage widths are scaled by `width / 64` through `_make_layer`.
The blocks and the forward pass are torchvision's own.

Run from the repository root, with torch, torchvision and safetensors installed:

    python3 scripts/make_resnet_fixtures.py

Tests that use the output: crates/agc-core/tests/torchvision_parity.rs
"""

import json
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

OUT = Path(__file__).resolve().parent.parent / "crates/agc-core/tests/fixtures"


class NarrowResNet(ResNet):
    """torchvision's ResNet with every width scaled by width / 64."""

    def __init__(self, block, layers, width, num_classes):
        self._width = width
        super().__init__(block, layers, num_classes=num_classes)
        # torchvision sized fc for 512 · expansion input features.
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:
            # First stage: rebuild the stem at the narrow width before the stage is made.
            self.inplanes = self._width
            self.conv1 = nn.Conv2d(3, self._width, 7, 2, 3, bias=False)
            self.bn1 = self._norm_layer(self._width)
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


def randomise_batch_norms(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)


def features(model, x):
    """torchvision's forward up to the last stage (before the average pool)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 3, 64, 96)
    io = {"input": x}
    specs = {
        "basic": (BasicBlock, [2, 2, 1, 1], 8),
        "bottleneck": (Bottleneck, [1, 2, 1, 1], 4),
    }
    for name, (block, layers, width) in specs.items():
        model = NarrowResNet(block, layers, width, num_classes=10)
        randomise_batch_norms(model)
        model.eval()
        with torch.no_grad():
            maps = features(model, x)
            embedding = torch.flatten(model.avgpool(maps), 1)
            logits = model(x)
        assert torch.allclose(model.fc(embedding), logits)
        io[f"{name}.features"] = maps
        io[f"{name}.embedding"] = embedding
        io[f"{name}.logits"] = logits
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, OUT / f"resnet_{name}.safetensors")
        # The bottleneck checkpoint is nested, as training scripts save them.
        pth = state if name == "basic" else {"state_dict": state, "epoch": 3}
        torch.save(pth, OUT / f"resnet_{name}.pth")
    save_file({k: v.contiguous() for k, v in io.items()}, OUT / "resnet_io.safetensors")
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "models": {k: {"block": v[0].__name__, "layers": v[1], "width": v[2], "num_classes": 10}
                   for k, v in specs.items()},
        "input": list(x.shape),
    }
    (OUT / "resnet_fixtures.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
