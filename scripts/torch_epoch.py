#!/usr/bin/env python3
"""PyTorch reference for scripts/gpu-check.sh: times one training epoch of the models agc
trains (MetaResNet and ChipNet on a torchvision ResNet-18), same sizes, on the same GPU.

The data are random tensors already on the device, so this times the model (forward, backward,
two Adam groups), not the data loading; agc's figure in gpu-check.sh includes its loader, which
makes the comparison conservative for agc.

    python3 scripts/torch_epoch.py --model chipnet --images 512 --batch 32 --size 224 --chip 32
"""

import argparse
import time

import torch
import torch.nn as nn
import torchvision


class MetaResNet(nn.Module):
    def __init__(self, meta_dim):
        super().__init__()
        self.backbone = torchvision.models.resnet18()
        self.backbone.fc = nn.Identity()
        self.meta = nn.Sequential(
            nn.Linear(meta_dim, 512), nn.ReLU(), nn.BatchNorm1d(512),
            nn.Linear(512, 128), nn.ReLU(), nn.BatchNorm1d(128))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(512 + 128, 1)

    def forward(self, x, m):
        return self.fc(self.dropout(torch.cat([self.backbone(x), self.meta(m)], 1)))


class ChipNet(nn.Module):
    def __init__(self, chip):
        super().__init__()
        self.chip = chip
        self.backbone = torchvision.models.resnet18()
        self.backbone.fc = nn.Identity()
        self.drop2d = nn.Dropout2d(0.7)
        self.conv1 = nn.Conv2d(512, 512, 3, padding=1)
        self.bn = nn.BatchNorm2d(512)
        self.conv2 = nn.Conv2d(512, 1, 3, padding=1)
        self.head_bn = nn.BatchNorm1d(512)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(512, 1)

    def forward(self, x, _m):
        b, c, s, _ = x.shape
        g = s // self.chip
        chips = x.reshape(b, c, g, self.chip, g, self.chip).permute(0, 2, 4, 1, 3, 5)
        emb = self.backbone(chips.reshape(b * g * g, c, self.chip, self.chip))
        fmap = emb.reshape(b, g, g, -1).permute(0, 3, 1, 2)
        a = self.conv2(self.bn(torch.relu(self.conv1(self.drop2d(fmap)))))
        a = torch.softmax(a.reshape(b, -1), 1)
        pooled = (fmap.reshape(b, fmap.shape[1], -1) * a.unsqueeze(1)).sum(2)
        return self.fc(self.dropout(self.head_bn(torch.relu(pooled))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["resnet", "chipnet"], required=True)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chip", type=int, default=32)
    p.add_argument("--meta", type=int, default=20)
    p.add_argument("--device", default="cuda:0")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = (MetaResNet(a.meta) if a.model == "resnet" else ChipNet(a.chip)).to(dev).train()
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.Adam([
        {"params": model.backbone.parameters(), "lr": 1e-5},
        {"params": head, "lr": 5e-5},
    ])
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    m = torch.randn(a.batch, a.meta, device=dev)
    y = (torch.rand(a.batch, 1, device=dev) > 0.5).float()
    steps = a.images // a.batch

    def epoch():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x, m), y)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    epoch()  # warm-up: cuDNN autotuning, allocator
    t = time.perf_counter()
    epoch()
    print(f"torch {a.model} {a.size}px batch {a.batch}: {time.perf_counter() - t:.2f} s "
          f"per epoch of {steps * a.batch} images on {dev}")


if __name__ == "__main__":
    main()
