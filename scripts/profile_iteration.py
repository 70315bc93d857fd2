"""Profile a few guided iterations of the paper's algorithm, part by part, before changing anything.

Runs fsa's own decoder (fsa.guidance.decoder.guided_decode) for `--warmup` + `--iterations` guided
iterations of one timestep under torch.profiler and writes, per part of the iteration, the time per
iteration (GPU kernel time on CUDA, CPU time on the CPU), its share, and the kernels it launches per
iteration (on the CPU: the leaf operators it runs); the host synchronisations per iteration; and the
top kernels. The parts are the decoder's named regions (`fsa.<part>`: unet, decode, extract, backward,
guide, post_check, report, sampler; nested ones as `post_check/decode`), and the backward is split by
the forward part each operator's gradient belongs to (`backward: unet`). Weights are random (the cost
does not depend on their values), in SD 1.4's, CLIP RN50's and ViT-H/14's shapes, as scripts/bench.py.

    python scripts/profile_iteration.py --out docs/measurements/profile_clip_rn50   # 512 px on CUDA
    python scripts/profile_iteration.py --extractor vit_h14 --batch 3 --out ...
    python scripts/profile_iteration.py --tiny --image-size 32 --iterations 2 --out /tmp/p  # the test, CPU
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
from bench import EXTRACTORS, build_backbone, build_extractor
from torch.profiler import ProfilerActivity, profile

from fsa.diffusion.samplers import DDIMSampler
from fsa.guidance.decoder import guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance
from fsa.speed import DTYPE_NAMES, torch_dtype

REGION = "fsa."  # the decoder's named parts
BACKWARD = "autograd::engine::evaluate_function: "  # the autograd engine's node around a backward op
# Operators that make the host wait for the device on a GPU: a value or a data-dependent shape read back.
SYNCING_OPS = ("aten::_local_scalar_dense", "aten::nonzero")
SYNCING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
TOP = 15


def part_of(event: Any, forward_part: dict[int, str]) -> str:
    """The named part an operator belongs to: its enclosing `fsa.*` regions (`post_check/decode`), or
    for a backward operator, the part whose forward operator made its autograd node."""
    names, node = [], event
    while node is not None:
        if node.name.startswith(BACKWARD):
            return f"backward: {forward_part.get(node.sequence_nr, 'other')}"
        if node.name.startswith(REGION):
            names.append(node.name.removeprefix(REGION))
        node = node.cpu_parent
    parts = [name for name in reversed(names) if name != "backward"]  # the region that runs autograd.grad
    return "/".join(parts) or ("backward: other" if "backward" in names else "other")


def cost(event: Any, cuda: bool) -> float:
    """An operator's own time in microseconds: its kernels' on CUDA, its own CPU time on the CPU."""
    return float(event.self_device_time_total if cuda else event.self_cpu_time_total)


def attribute(events: list[Any], iterations: int, cuda: bool) -> dict[str, Any]:
    """Per part: time and kernels per iteration; host syncs per iteration; the top kernels."""
    forward_part = {}
    for event in events:  # forward operators that record an autograd node (sequence_nr >= 0)
        if event.sequence_nr >= 0 and not event.name.startswith(BACKWARD) and event.sequence_nr not in forward_part:
            part = part_of(event, {})
            if not part.startswith(("backward", "other")):  # not autograd's own bookkeeping
                forward_part[event.sequence_nr] = part
    time_us: dict[str, float] = defaultdict(float)
    kernels: Counter[str] = Counter()
    syncs = 0
    for event in events:
        if event.name.startswith((REGION, BACKWARD, "ProfilerStep")):
            continue
        part = part_of(event, forward_part)
        time_us[part] += cost(event, cuda)
        if cuda:
            kernels[part] += len(event.kernels)
        elif event.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in event.cpu_children):
            kernels[part] += 1  # a leaf operator: what would be a kernel launch
        syncs += event.name in SYNCING_OPS or event.name in SYNCING_CALLS
    total = sum(time_us.values())
    parts = [
        {
            "part": part,
            "ms_per_iteration": time_us[part] / 1e3 / iterations,
            "share": time_us[part] / total if total else 0.0,
            "kernels_per_iteration": kernels[part] / iterations,
        }
        for part in sorted(time_us, key=time_us.__getitem__, reverse=True)
    ]
    return {
        "parts": parts,
        "total_ms_per_iteration": total / 1e3 / iterations,
        "syncs_per_iteration": syncs / iterations,
    }


def top_kernels(profiler: Any, iterations: int, cuda: bool) -> list[dict[str, Any]]:
    """The kernels (CPU: operators, own time) that take the most time, per iteration."""
    rows = []
    for average in profiler.key_averages():
        if average.key.startswith((REGION, BACKWARD, "ProfilerStep", "cuda")):
            continue
        own = average.self_device_time_total if cuda else average.self_cpu_time_total
        rows.append(
            {"name": average.key, "ms_per_iteration": own / 1e3 / iterations, "calls": average.count / iterations}
        )
    return sorted(rows, key=lambda row: row["ms_per_iteration"], reverse=True)[:TOP]


def profile_iterations(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    with torch.device(device):
        backbone = build_backbone(args.image_size, args.tiny).to(device)
        extractor = build_extractor(args.extractor, args.tiny).to(device)
    target = torch.randn(1, extractor.feature_dim, device=device).expand(args.batch, -1)
    guidance = FeatureGuidance(early_steps=0, k=args.warmup + args.iterations)  # the paper's guidance, one t
    generators = [torch.Generator().manual_seed(i) for i in range(args.batch)]
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    schedule = torch.profiler.schedule(wait=0, warmup=args.warmup, active=args.iterations, repeat=1)
    profiler = profile(activities=activities, schedule=schedule, acc_events=True)
    stamps: list[float] = []

    def step(_snapshot: object) -> None:  # the profiler's schedule counts guided iterations
        if cuda:
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        profiler.step()

    with profiler:
        guided_decode(
            backbone,
            DDIMSampler(num_steps=1),
            guidance,
            extractor,
            target,
            generators,
            dtype=torch_dtype(args.dtype),
            on_iteration=step,
        )
    profiled = stamps[args.warmup :]
    figures = attribute(list(profiler.events()), args.iterations, cuda)
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "extractor": "tiny" if args.tiny else args.extractor,
        "backbone": "tiny" if args.tiny else "sd-1.4 shapes (random weights)",
        "image_size": args.image_size,
        "batch": args.batch,
        "dtype": args.dtype,
        "iterations": args.iterations,
        "measure": "GPU kernel time" if cuda else "CPU time (own, per operator)",
        "wall_ms_per_iteration_profiled": 1e3 * (profiled[-1] - profiled[0]) / max(len(profiled) - 1, 1),
        **figures,
        "top": top_kernels(profiler, args.iterations, cuda),
        "torch": torch.__version__,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# One guided iteration, part by part: {result['backbone']} + {result['extractor']}, "
        f"{result['image_size']} px, batch {result['batch']}, {result['dtype']}, on {result['device']}",
        "",
        f"{result['measure']}, {result['iterations']} profiled iterations: {result['total_ms_per_iteration']:.2f} ms "
        f"per iteration over the parts; wall {result['wall_ms_per_iteration_profiled']:.2f} ms under the profiler; "
        f"{result['syncs_per_iteration']:.1f} host synchronisations per iteration.",
        "",
        "| part | ms / iteration | share | kernels / iteration |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['part']} | {p['ms_per_iteration']:.3f} | {p['share']:.1%} | {p['kernels_per_iteration']:.0f} |"
        for p in result["parts"]
    ]
    lines += ["", "| top kernel | ms / iteration | calls / iteration |", "|---|---|---|"]
    lines += [f"| `{t['name'][:90]}` | {t['ms_per_iteration']:.3f} | {t['calls']:.0f} |" for t in result["top"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--image-size", type=int, default=512 if cuda else 64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.add_argument("--extractor", choices=EXTRACTORS, default="clip_rn50")
    parser.add_argument("--tiny", action="store_true", help="fsa's tiny random backbone and extractor")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="folder for profile.json and profile.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = profile_iterations(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=1))
    (args.out / "profile.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
