#!/usr/bin/env python3
"""PyTorch reference for `examples/model_bench.rs`: the same workloads, the same output lines.

    RESULT <workload> median_ms=<x>

Workloads (batch 8 of 224×224 images, f32, eager PyTorch on the CPU, torch.get_num_threads()
threads; `--threads` sets it):
- r18_fwd_b8_224: torchvision ResNet-18 (1000-class head), eval mode, no_grad;
- r18_train_step_b8_224: ResNet-18 with one logit, train mode, BCE with logits, backward, Adam;
- chipnet_r18_train_step_b8_224: ChipNet (ResNet-18 over 7×7 chips of 32, attention head with
  hidden 512, Dropout2d 0.7, dropout 0.5), the same loss, backward and Adam step;
- r50_98chips_32: torchvision ResNet-50 embeddings (no fc) of 98 chips of 32×32, no_grad.

`--parts` also prints `PART <workload> forward|backward|optimizer median_ms=<x>` as the Rust
bench does (forward alone; forward + backward less the forward; the optimizer's step alone,
timed after an untimed forward and backward pass each run), and `--profile` prints torch.profiler's table of the training steps' operators
(self CPU time), the per-operation breakdown docs/performance.md compares against.

Each timing is the median of `--reps` runs after two warm-up runs. Needs torch and torchvision:

    python3 scripts/torch_model_bench.py [--reps 5] [--only WORKLOAD] [--parts] [--profile]
        [--batch 8] [--device cpu]

`--device cuda:0` runs on a GPU (TF32 allowed for matrix products and convolutions, cuDNN's
autotuner on, a synchronisation at the end of every timed run), as `scripts/gpu-check.sh` does
with `--batch 32`; the batch is part of the workload names (`r18_train_step_b32_224`).
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_epoch  # noqa: E402  (the ChipNet shared with the GPU check)

SIZE = 224


def workloads(batch):
    return [f"r18_fwd_b{batch}_224", f"r18_train_step_b{batch}_224",
            f"chipnet_r18_train_step_b{batch}_224", "r50_98chips_32"]


class ChipNet(torch_epoch.ChipNet):
    """agc's ChipNet (crates/agc-core/src/models/chipnet.rs), as scripts/torch_epoch.py writes it
    (attention hidden 512, Dropout2d 0.7, dropout 0.5), taking the images alone."""

    def forward(self, x):
        return super().forward(x, None)


DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def median_ms(reps, run):
    run()
    run()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def training(name, model, args):
    model.to(DEVICE).train()
    batch = args.batch
    x = torch.randn(batch, 3, SIZE, SIZE, device=DEVICE)
    pattern = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    y = torch.tensor([pattern[i % 8] for i in range(batch)], device=DEVICE).reshape(batch, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.functional.binary_cross_entropy_with_logits

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    print(f"RESULT {name} median_ms={median_ms(args.reps, step):.1f}", flush=True)
    if args.parts:
        # The same split as the Rust bench: forward alone, forward + backward, the whole step.
        def forward():
            with torch.no_grad():
                loss_fn(model(x), y).item()

        def forward_backward():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()

        def optimizer():
            # The optimizer's step alone, on the gradients of an untimed forward and backward.
            forward_backward()
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            return (time.perf_counter() - start) * 1e3

        fwd = median_ms(args.reps, forward)
        fwd_bwd = median_ms(args.reps, forward_backward)
        print(f"PART {name} forward median_ms={fwd:.1f}")
        print(f"PART {name} backward median_ms={fwd_bwd - fwd:.1f}")
        optim_ms = statistics.median([optimizer() for _ in range(args.reps + 2)][2:])
        print(f"PART {name} optimizer median_ms={optim_ms:.1f}", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(f"# torch.profiler, {name}, 3 steps, self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main():
    global DEVICE
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only")
    p.add_argument("--parts", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    fwd, step, chip_step, r50 = workloads(args.batch)
    if args.only is not None and args.only not in workloads(args.batch):
        p.error(f"unknown workload {args.only!r}; expected one of {workloads(args.batch)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        where = torch.cuda.get_device_name(DEVICE)
    else:
        where = (f"CPU, {torch.get_num_threads()} threads, "
                 f"{torch.backends.cpu.get_cpu_capability()} kernels")
    torch.manual_seed(0)
    print(f"# torch {torch.__version__} model bench: {where}, batch {args.batch}, "
          f"median of {args.reps} runs", flush=True)

    def wanted(name):
        return args.only is None or args.only == name

    if wanted(fwd):
        model = torchvision.models.resnet18().to(DEVICE).eval()
        x = torch.randn(args.batch, 3, SIZE, SIZE, device=DEVICE)

        def forward():
            with torch.no_grad():
                model(x)

        print(f"RESULT {fwd} median_ms={median_ms(args.reps, forward):.1f}", flush=True)
    if wanted(step):
        model = torchvision.models.resnet18()
        model.fc = nn.Linear(512, 1)
        training(step, model, args)
    if wanted(chip_step):
        training(chip_step, ChipNet(chip=32), args)
    if wanted(r50):
        model = torchvision.models.resnet50()
        model.fc = nn.Identity()
        model.to(DEVICE).eval()
        chips = torch.randn(98, 3, 32, 32, device=DEVICE)

        def forward():
            with torch.no_grad():
                model(chips)

        print(f"RESULT {r50} median_ms={median_ms(args.reps, forward):.1f}", flush=True)


if __name__ == "__main__":
    main()
