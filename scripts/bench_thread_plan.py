"""Speed: on a 2-core machine, two 1-thread trials side by side against one 2-thread trial
(issue 36's thread plan), for each kind of work a method's trial does.

Usage: python scripts/bench_thread_plan.py [--work fp,lsq,qfa,oqat,dnas,hawq,eval] [--steps 6]
       [--rounds 3]

Each kind of work is one step of what the trials spend their time on, at Fashion-MNIST's
size (3×32×32 images): ``fp`` a ResNet-20 FP training step (batch 128: pretraining),
``lsq`` the same at uniform W4A4 LSQ (every bits-only method's finetunes, HAQ's episodes),
``qfa`` a BatchQuant mbv3-cifar supernet step (6 subnets, batch 64: QFA's training),
``oqat`` an OQAT W4A4 mbv3-cifar sandwich step (4 subnets, shared LSQ steps, batch 64),
``dnas`` a DNAS weights' step on ResNet-20 (a Gumbel draw of every layer's bit mixture,
shared weights, batch 128),
``hawq`` a ResNet-20 Hessian-vector product (batch 32: HAWQ-V3's trace estimate) and
``eval`` a W4A4 ResNet-20 forward in eval mode (batch 500: every trial's scoring).

Per round and kind, two layouts of the same total work run one after the other:

- ``2x1``: two worker processes of 1 thread, ``--steps`` steps each, started together;
- ``1x2``: one worker of 2 threads, ``2 × --steps`` steps.

Workers build and warm up first, then wait for one signal, so only the steps are timed; a
layout's seconds are those of its slowest worker. The ratio ``1x2 / 2x1`` is over 1 where
two 1-thread trials side by side finish the same work sooner. Prints the median ratio per
kind over the rounds, with min and max, as JSON (with the load before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

WORK = ("fp", "lsq", "qfa", "oqat", "dnas", "hawq", "eval")


def resnet_step(bits: int | None) -> Callable[[], None]:
    from benchmark.arena.spaces import get_space

    space = get_space("resnet20")
    model = space.build(policy=space.uniform_policy(bits) if bits else None).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def qfa_step() -> Callable[[], None]:
    from benchmark.arena import get_space
    from methods.qfa import QFA, STAGE_BITS
    from methods.qfa.sampler import QFASampler

    base = get_space("mbv3-cifar")
    space = base.with_fixed(QFA.qfa_fixed(base))
    supernet = space.build_supernet(QFA.quant(), base.build_supernet().state_dict()).train()
    opt = torch.optim.SGD(supernet.parameters(), lr=1e-4)
    sampler = QFASampler(space, num_random=4, bits=STAGE_BITS[1])
    rng = random.Random(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for arch, policy in [sampler.largest(rng), *sampler.others(rng)]:
            space.set_active(supernet, arch, policy)
            F.cross_entropy(supernet(x), y).backward()
        opt.step()

    return step


def oqat_step() -> Callable[[], None]:
    from benchmark.arena import get_space
    from benchmark.arena.recipes.supernet import SandwichSampler, sandwich_step
    from methods.oqat import oqat_quant

    base = get_space("mbv3-cifar")
    space = base.with_fixed(32)
    supernet = space.build_supernet(oqat_quant())
    supernet.load_state_dict(base.build_supernet().state_dict(), strict=False)
    supernet.train()

    def w4a4(arch: object, rng: random.Random) -> object:
        return space.uniform_policy(4, 4, arch)

    loss_of = sandwich_step(space, SandwichSampler(space, num_random=2, policy=w4a4), seed=0)
    opt = torch.optim.SGD(supernet.parameters(), lr=1e-4)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_of(supernet, x, y)
        loss.backward()
        opt.step()

    return step


def dnas_step() -> Callable[[], None]:
    from benchmark.arena import apply_policy, get_space
    from methods.dnas.method import QUANT
    from methods.dnas.steps import SearchState, weight_step
    from methods.dnas.supernet import SuperNet

    space = get_space("resnet20")
    arch = space.reference_arch
    model = space.build(arch, None, quant=QUANT)
    apply_policy(model, space.fixed_policy(arch))
    table = space.cost_table(arch)
    net = SuperNet(model, table, table.searchable, (2, 3, 4, 8), "factorised", "shared", "bitops")
    state = SearchState(tau=5.0, generator=torch.Generator().manual_seed(0))
    loss_of = weight_step(net, state)
    net.module.train()
    opt = torch.optim.SGD(net.module.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_of(net.module, x, y)
        loss.backward()
        opt.step()

    return step


def hawq_step() -> Callable[[], None]:
    from benchmark.arena.spaces import get_space

    model = get_space("resnet20").build().eval()
    params = [p for p in model.parameters() if p.dim() > 1]
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def step() -> None:  # one Hessian-vector product over every weight (Rademacher v)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        vs = [torch.randint_like(p, 2) * 2 - 1 for p in params]
        torch.autograd.grad(grads, params, grad_outputs=vs)

    return step


def eval_step() -> Callable[[], None]:
    from benchmark.arena.spaces import get_space

    space = get_space("resnet20")
    model = space.build(policy=space.uniform_policy(4))
    model.train()(torch.randn(64, 3, 32, 32))  # LSQ's steps initialised on one batch
    model.eval()
    x = torch.randn(500, 3, 32, 32)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


BUILDERS: dict[str, Callable[[], Callable[[], None]]] = {
    "fp": lambda: resnet_step(None),
    "lsq": lambda: resnet_step(4),
    "qfa": qfa_step,
    "oqat": oqat_step,
    "dnas": dnas_step,
    "hawq": hawq_step,
    "eval": eval_step,
}


def worker(work: str, threads: int, steps: int) -> None:
    """Build and warm up, say ``ready``, wait for a line on stdin, time ``steps`` steps and
    print their wall seconds."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = BUILDERS[work]()
    for _ in range(2):
        step()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def layout(work: str, processes: int, threads: int, steps: int) -> float:
    """Seconds of the slowest of ``processes`` workers started together."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", work]
    command += ["--threads", str(threads), "--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    for proc in workers:  # every worker built and warmed up
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"a {work} worker failed before its steps")
    for proc in workers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    seconds = [json.loads(proc.stdout.readline())["seconds"] for proc in workers]
    for proc in workers:
        proc.wait()
    return max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=",".join(WORK))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=WORK, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.steps)
        return
    works = [w.strip() for w in args.work.split(",") if w.strip()]
    unknown = sorted(set(works) - set(WORK))
    if unknown:
        parser.error(f"--work: unknown {unknown}; choose from {', '.join(WORK)}")
    load_before = os.getloadavg()
    result: dict[str, object] = {"steps_per_process": args.steps, "rounds": args.rounds}
    for work in works:
        two_by_one, one_by_two = [], []
        for _ in range(args.rounds):  # the layouts alternate: the machine's noise on both
            two_by_one.append(layout(work, 2, 1, args.steps))
            one_by_two.append(layout(work, 1, 2, 2 * args.steps))
        ratios = [b / a for a, b in zip(two_by_one, one_by_two, strict=True)]
        result[work] = {
            "2x1_s": round(statistics.median(two_by_one), 2),
            "1x2_s": round(statistics.median(one_by_two), 2),
            "ratio_1x2_over_2x1": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
            "faster": "2x1" if statistics.median(ratios) > 1 else "1x2",
        }
        print(json.dumps({work: result[work]}), flush=True)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
