#!/usr/bin/env python3
"""Fixtures of crates/agc-train/src/train/tests.rs's `training_steps_follow_pytorch`: a
`[1, 1, 1, 1]` ResNet of width 4 with one logit (scripts/learning_parity.py's `Net`, dropout 0)
trained 6 Adam steps in PyTorch on one batch of 32×32 images with the focal loss, in training
mode (batch statistics, running statistics updated). Writes its initial weights
(`train_step/initial.pth`, torchvision's key names) and the batch, the loss of every step, the
eval-mode logits after the steps and two batch norms' running statistics
(`train_step/expected.json`), under crates/agc-train/tests/fixtures/. Needs torch.

    python3 scripts/make_train_step_fixtures.py
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from learning_parity import Net, focal  # noqa: E402

OUT = Path(__file__).parent.parent / "crates/agc-train/tests/fixtures/train_step"
STEPS = 6
LR = 1e-3


def main():
    torch.manual_seed(3)
    net = Net(width=4, dropout=0.0)
    g = torch.Generator().manual_seed(5)
    # Three decimals, so the JSON holds the exact inputs in few characters.
    images = torch.round(torch.randn(8, 3, 32, 32, generator=g) * 1000) / 1000
    # A brighter centre in the positives, so the steps have something to learn.
    targets = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1], dtype=torch.float32)
    images[:, :, 12:20, 12:20] += targets.view(8, 1, 1, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, OUT / "initial.pth")
    optim = torch.optim.Adam(net.parameters(), lr=LR, eps=1e-8)
    losses = []
    net.train()
    for _ in range(STEPS):
        loss = focal(net(images).squeeze(1), targets)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        logits = net(images).squeeze(1)
    expected = {
        "script": "scripts/make_train_step_fixtures.py",
        "torch": torch.__version__,
        "width": 4,
        "lr": LR,
        "images_shape": list(images.shape),
        "images": [round(v, 3) for v in images.flatten().tolist()],
        "targets": targets.tolist(),
        "fc_weight": state["fc.weight"].flatten().tolist(),
        "fc_bias": state["fc.bias"].tolist(),
        "losses": losses,
        "eval_logits": logits.tolist(),
        "bn1_running_mean": net.bn1.running_mean.tolist(),
        "bn1_running_var": net.bn1.running_var.tolist(),
        # layer4's last batch norm sees 8 values per channel (1×1 maps): PyTorch's unbiased
        # running variance is 8/7 of a biased one there.
        "layer4_bn2_running_var": net.layer4[0].bn2.running_var.tolist(),
    }
    (OUT / "expected.json").write_text(json.dumps(expected, separators=(",", ":")))
    print(f"{OUT}: losses {[round(v, 5) for v in losses]}")


if __name__ == "__main__":
    main()
