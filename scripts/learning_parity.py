#!/usr/bin/env python3
"""Learning parity with PyTorch, PyTorch's half: trains the model that
`examples/learning_parity.rs` trains in agc, the same way, on the same files, and writes the
same per-epoch curves (docs/learning-parity.md; `scripts/learning_parity.sh` runs both).

    python3 scripts/learning_parity.py --set SET --images oracle --width 16 --seed 1 --out t.json

The model is torchvision's ResNet with basic blocks [1, 1, 1, 1] at a given width (torchvision
fixes the width at 64, so the network is written out here with torchvision's layers, layer
order and initialisation: Kaiming-normal fan-out convolutions, batch norm 1/0, `nn.Linear`'s
default), global average pooling, dropout and one logit: agc's `MetaResNet` without metadata.
Training as agc's `train_fold` does it: every epoch every negative once and the positives drawn
(each about equally often) until they are as many, shuffled; batches of `--batch`, the short
last one dropped; flips and quarter turns drawn per image (p = 0.5, 0.5, 1/4 each); ImageNet
normalisation; Adam (betas 0.9/0.999, eps 1e-8) at one learning rate; the focal loss
(alpha 1, gamma 2) as a batch mean; validation on the plain images in eval mode, batch 64.
Needs torch and numpy.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (expansion 1)."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Net(nn.Module):
    """ResNet [1, 1, 1, 1] of `width` → global average pool → dropout → linear to one logit."""

    def __init__(self, width, dropout):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # One block per stage, in torchvision's Sequential so the keys are torchvision's.
        self.layer1 = nn.Sequential(BasicBlock(w, w, 1))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * w, 1)
        # torchvision ResNet.__init__'s initialisation (the Linear keeps its default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(x.mean((2, 3)), 1)
        return self.fc(self.dropout(x))


def focal(logits, targets, gamma=2.0):
    """agc's Loss::Focal { alpha: 1, gamma }: (1 - p_t)^gamma · BCE, batch mean."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def focal_of_probabilities(p, y, gamma=2.0):
    """agc's validation loss: the focal loss of clamped probabilities, mean."""
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    pt = np.where(y == 1, p, 1 - p)
    return float(np.mean((1 - pt) ** gamma * -np.log(pt)))


def roc_auc(scores, labels):
    """ROC AUC with tied scores given their mean rank (as scikit-learn and agc's roc_auc)."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_epoch(labels, rows, rng):
    """Every negative once, positives drawn in shuffled rounds until as many, all shuffled."""
    pos = [r for r in rows if labels[r] == 1]
    neg = [r for r in rows if labels[r] == 0]
    drawn = []
    while len(drawn) < len(neg):
        round_ = list(rng.permutation(pos))
        drawn.extend(round_[: len(neg) - len(drawn)])
    epoch = np.array(neg + drawn)
    return epoch[rng.permutation(len(epoch))]


def augment(image, rng):
    """Flips (p = 0.5 each, horizontal then vertical) then 0-3 quarter turns, on HWC."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = image[::-1]
    return np.rot90(image, rng.integers(4))


def to_tensor(images):
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, required=True)
    ap.add_argument("--images", default="oracle")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--dropout", type=float, default=0.3)
    # Only the symmetries can be drawn the same way in both frameworks; agc's `train`
    # augmentation (hair, free rotation, jitter) is for agc-only recipe curves.
    ap.add_argument("--augment", choices=["symmetries"], default="symmetries")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    split = json.loads((a.set / "split.json").read_text())
    images = np.load(split["images"][a.images], mmap_mode="r")
    labels = np.array(split["labels"], dtype=np.int64)
    valid_rows = np.array(split["valid"])
    valid_x = to_tensor(np.asarray(images[valid_rows]))
    valid_y = labels[valid_rows]
    model = Net(a.width, a.dropout)
    optim = torch.optim.Adam(model.parameters(), lr=a.lr, eps=1e-8)
    epochs = []
    for epoch in range(a.epochs):
        started = time.time()
        model.train()
        rows = balanced_epoch(labels, split["train"], rng)
        loss_sum, seen = 0.0, 0
        for start in range(0, len(rows) - a.batch + 1, a.batch):
            batch = rows[start : start + a.batch]
            x = to_tensor(np.stack([augment(np.asarray(images[r]), rng) for r in batch]))
            y = torch.from_numpy(labels[batch].astype(np.float32))
            loss = focal(model(x).squeeze(1), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
            loss_sum += loss.item() * len(batch)
            seen += len(batch)
        model.eval()
        with torch.no_grad():
            p = torch.cat(
                [torch.sigmoid(model(valid_x[i : i + 64])).squeeze(1) for i in range(0, len(valid_x), 64)]
            ).numpy()
        epochs.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "valid_loss": focal_of_probabilities(p, valid_y),
                "valid_auc": roc_auc(p, valid_y),
                "seconds": time.time() - started,
            }
        )
    curves = {
        "framework": "pytorch",
        "images": a.images,
        "width": a.width,
        "lr": a.lr,
        "batch": a.batch,
        "augment": a.augment,
        "seed": a.seed,
        "epochs": epochs,
    }
    tmp = a.out.with_suffix(".partial")
    tmp.write_text(json.dumps(curves, indent=1))
    tmp.replace(a.out)
    best = max(e["valid_auc"] for e in epochs)
    print(
        f"pytorch {a.images} w{a.width} lr {a.lr} batch {a.batch} seed {a.seed}: "
        f"last valid AUC {epochs[-1]['valid_auc']:.4f}, best {best:.4f}"
    )


if __name__ == "__main__":
    main()
