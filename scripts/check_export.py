"""Rebuilds an `agc export` in PyTorch from its files alone and writes what PyTorch computes.

    python scripts/check_export.py EXPORT_DIR [--out EXPECTED.safetensors]

EXPORT_DIR holds `model.json` and `<model>/fold<k>.safetensors` (docs/architecture.md). Every
model is rebuilt from `model.json` (torchvision's ResNet at the exported width, agc's heads
written out below from the description), its weights are loaded with `strict=True` (the
only keys allowed to be absent are batch norms' `num_batches_tracked`, which agc does not
keep), and it is run in eval mode on fixed inputs. With `--out`, the inputs and every model's
logits (and attention maps) are written as safetensors: the fixture that
`crates/agc-train/tests/export_parity.rs` compares agc's own outputs with. Needs torch,
torchvision and safetensors (`scripts/bench_models.sh` says how to get them).
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


class NarrowResNet(ResNet):
    """torchvision's ResNet with every width scaled by width / 64, without a head."""

    def __init__(self, block, layers, width):
        self._width = width
        super().__init__(block, layers)
        self.fc = nn.Identity()

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:
            self.inplanes = self._width
            self.conv1 = nn.Conv2d(3, self._width, 7, 2, 3, bias=False)
            self.bn1 = self._norm_layer(self._width)
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def embed(self, x):
        return torch.flatten(self.avgpool(self.features(x)), 1)


def backbone(desc):
    block = {"Basic": BasicBlock, "Bottleneck": Bottleneck}[desc["block"]]
    return NarrowResNet(block, desc["layers"], desc["width"])


class MetaMlp(nn.Module):
    def __init__(self, meta_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(meta_dim, hidden[0])
        self.bn1 = nn.BatchNorm1d(hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.bn2 = nn.BatchNorm1d(hidden[1])

    def forward(self, m):
        return self.bn2(torch.relu(self.fc2(self.bn1(torch.relu(self.fc1(m))))))


class MetaResNet(nn.Module):
    def __init__(self, desc):
        super().__init__()
        net = desc["network"]
        self.backbone = backbone(desc["backbone"])
        dim = desc["backbone"]["embed_dim"]
        self.meta = MetaMlp(net["meta_dim"], net["meta_hidden"]) if net["meta_dim"] else None
        self.fc = nn.Linear(dim + (net["meta_hidden"][1] if self.meta else 0), 1)

    def forward(self, x, m):
        e = self.backbone.embed(x)
        if self.meta is not None:
            e = torch.cat([e, self.meta(m)], 1)
        return self.fc(e), None


class AttentionPool(nn.Module):
    def __init__(self, channels, hidden, kernel=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, 1, kernel, padding=kernel // 2)

    def forward(self, fmap, bias=None):
        b, c, h, w = fmap.shape
        scores = self.conv2(self.bn(torch.relu(self.conv1(fmap)))).reshape(b, h * w)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores, 1)
        pooled = (fmap.reshape(b, c, h * w) * weights.unsqueeze(1)).sum(2)
        return pooled, weights.reshape(b, h, w)


class PooledHead(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, 1)

    def forward(self, pooled):
        return self.fc(self.bn(torch.relu(pooled)))


class ChipNet(nn.Module):
    def __init__(self, desc):
        super().__init__()
        net = desc["network"]
        dim = desc["backbone"]["embed_dim"]
        self.chip = net["chip"]
        self.field_mask = net.get("field_mask")
        self.prior = net.get("contrast_prior", 0.0)
        self.backbone = backbone(desc["backbone"])
        self.attention = AttentionPool(dim, net["attention_hidden"], net.get("attention_kernel", 3))
        self.head = PooledHead(dim)

    def black_share(self, x):
        """The share of black pixels in every chip (model.json's field_mask rule)."""
        mask = self.field_mask
        mean = torch.tensor(mask["mean"]).reshape(1, 3, 1, 1)
        std = torch.tensor(mask["std"]).reshape(1, 3, 1, 1)
        black = ((x * std + mean).mean(1, keepdim=True) < mask["level"]).float()
        return nn.functional.avg_pool2d(black, self.chip).flatten(1)

    @staticmethod
    def keep_one(flags):
        """Clears the rows of `flags` (1 = excluded) that exclude every chip."""
        return flags * (flags.sum(1, keepdim=True) < flags.shape[1]).float()

    def contrast_prior(self, x, inside):
        """How much each chip stands out from the image's others (agc_core::contrast_prior)."""
        b, c, s, _ = x.shape
        g, k = s // self.chip, self.chip
        chips = x.reshape(b, c, g, k, g, k).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, k * k)
        mean = chips.mean(3)
        std = ((chips - mean.unsqueeze(3)) ** 2).mean(3).sqrt()
        w = (inside if inside is not None else torch.ones(b, g * g)).unsqueeze(2)

        def standardise(v):
            n = w.sum(1, keepdim=True).clamp_min(1.0)
            centre = (v * w).sum(1, keepdim=True) / n
            spread = ((v - centre) ** 2 * w).sum(1, keepdim=True) / n
            return (v - centre) / (spread.sqrt() + 1e-4)

        z = standardise(torch.cat([mean, std], 2))
        return (standardise((z**2).sum(2, keepdim=True).sqrt()) * w).reshape(b, g * g)

    def forward(self, x, _m):
        b, c, s, _ = x.shape
        g, k = s // self.chip, self.chip
        chips = x.reshape(b, c, g, k, g, k).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, c, k, k)
        fmap = self.backbone.embed(chips).reshape(b, g, g, -1).permute(0, 3, 1, 2)
        bias = torch.zeros(b, g * g)
        clean = None
        if self.field_mask:
            share = self.black_share(x)
            bias = bias + self.keep_one((share >= self.field_mask["share"]).float()) * -1e4
            clean = 1.0 - self.keep_one((share > self.field_mask["clean"]).float())
        if self.prior:
            bias = bias + self.prior * self.contrast_prior(x, clean)
        pooled, weights = self.attention(fmap, bias)
        return self.head(pooled), weights


class AttnResNet(ChipNet):
    def forward(self, x, _m):
        pooled, weights = self.attention(self.backbone.features(x))
        return self.head(pooled), weights


def build(desc):
    kind = desc["network"]["type"]
    return {"MetaResNet": MetaResNet, "ChipNet": ChipNet, "AttnResNet": AttnResNet}[kind](desc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--batch", type=int, default=3)
    args = parser.parse_args()
    spec = json.loads((args.export / "model.json").read_text())
    size = spec["preprocessing"]["image_size"]
    meta_dim = max(
        (m["network"].get("meta_dim", 0) for m in spec["models"].values()), default=0
    )
    torch.manual_seed(0)
    inputs = {
        "images": torch.randn(args.batch, 3, size, size),
        "meta": torch.zeros(args.batch, max(meta_dim, 1)),
    }
    # A black field over the left quarter of the first image and two columns more (raw 0 in
    # every channel), so that a ChipNet with a field mask has chips outside the field and chips
    # its edge crosses.
    pre = spec["preprocessing"]
    black = -torch.tensor(pre["mean"]) / torch.tensor(pre["std"])
    inputs["images"][0, :, :, : size // 4 + 2] = black.reshape(3, 1, 1)
    # One-hot-like metadata: a 1 in a different slot of each image.
    for i in range(args.batch):
        inputs["meta"][i, (3 * i) % inputs["meta"].shape[1]] = 1.0
    out = dict(inputs)
    for name, desc in spec["models"].items():
        for f, file in enumerate(desc["folds"]):
            path = args.export / file
            if not path.is_file():
                continue
            model = build(desc)
            state = load_file(str(path))
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise SystemExit(f"{path}: missing {missing}, unexpected {unexpected}")
            model.eval()
            with torch.no_grad():
                logit, weights = model(inputs["images"], inputs["meta"][:, :meta_dim])
            out[f"{name}.fold{f}.logit"] = logit.reshape(-1).contiguous()
            if weights is not None:
                out[f"{name}.fold{f}.attention"] = weights.contiguous()
            print(f"{file}: {len(state)} tensors loaded; logits {logit.reshape(-1).tolist()}")
    if args.out:
        save_file({k: v.contiguous() for k, v in out.items()}, str(args.out))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
