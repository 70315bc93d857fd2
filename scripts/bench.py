"""Benchmark one guided iteration of the paper's algorithm, and its parts, against the paper's timing.

One guided iteration, timed through fsa's own decoder (fsa.guidance.decoder.guided_decode): UNet
forward with z requiring grad, VAE decode of z0_hat, extractor on the virtual save and the fp32 squared
distance, one backward to z through all three, guide (normalise, clip, Eq. 3), the post-guidance check
(decode + extract under no_grad) and the step. Its parts are timed alone in the same process. Weights
are random: the cost does not depend on their values.

    python scripts/bench.py                                  # SD 1.4 + CLIP RN50, 512 px on CUDA, 64 on CPU
    python scripts/bench.py --extractor vit_h14 --dtype bfloat16 --peak-tflops 989 --json bench.json
    python scripts/bench.py --tiny --image-size 64           # tiny random components (tests)
    python scripts/bench.py --compile --channels-last --dtype bfloat16 --vae-checkpointing
    python scripts/bench.py --compare                        # every option alone and together: a table of ratios
    python scripts/bench.py --flops-only --extractor vit_h14 # FLOPs at 512 px on the meta device, in seconds
    python scripts/bench.py --flops-only --gradient z0_hat --backward-steps 3   # a cheaper gradient's FLOPs
    python scripts/bench.py --digits --flops-only            # fsa's embedded digits DDPM and CNN (16 px)
    python scripts/bench.py --schedule "sampler=fast guidance=fast"   # a whole schedule's time per run

The speed options are fsa's own (fsa/speed.py, `speed.*` in the config), applied by the same function
as in a run. `--compare` benchmarks each variant in a fresh process (so peak memory is its own) and
prints their figures side by side with the speed-up over the paper-faithful fp32 mode.
"""

import argparse
import itertools
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from fsa import ASSETS_DIR
from fsa.config import compose_config
from fsa.diffusion.backbones import (
    DiffusionBackbone,
    LatentDiffusion,
    load_pixel_diffusion,
    stable_diffusion_architecture,
    tiny_latent_components,
)
from fsa.diffusion.samplers import DDIMSampler
from fsa.diffusion.schedule import NoiseSchedule, predict_x0
from fsa.extractors import OpenCLIPExtractor, TinyExtractor, TorchvisionExtractor
from fsa.extractors.digits_cnn import DigitsCNNExtractor
from fsa.guidance.decoder import guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance, squared_distance
from fsa.guidance.options import GRADIENTS
from fsa.speed import ATTENTION, DTYPE_NAMES, SpeedOptions, apply_speed_options, torch_dtype

PAPER_ITERATIONS = 12_960  # 5 * 1000 + 995 * 8 guided iterations per run
# The paper's time per run (RTX 3090, fp32, batch 1, 512 px) and GPU memory, per extractor.
PAPER_RUN_S = {"clip_rn50": 8_830.0, "resnet50": 8_951.0, "vit_h14": 16_897.0}
PAPER_MEMORY_GB = {"clip_rn50": 15.1, "resnet50": 14.9, "vit_h14": 19.6}
EXTRACTORS = ("clip_rn50", "resnet50", "vit_h14")
SD_TRAIN_TIMESTEPS = 1000
T = 500  # the timestep: the cost does not depend on it
# --compare: each option alone, then together (speed=fast). Flags are added to the common ones.
VARIANTS = {
    "faithful": [],
    "bf16": ["--dtype", "bfloat16"],
    "channels_last": ["--channels-last"],
    "eager_attention": ["--attention", "eager"],
    "compile": ["--compile"],
    "vae_checkpointing": ["--vae-checkpointing"],
    "no_post_check": ["--no-post-check"],
    "batch4": ["--batch", "4"],
    "fast": ["--dtype", "bfloat16", "--channels-last", "--compile", "--vae-checkpointing"],
    # speed=fast without torch.compile, whose compilation of SD's UNet, VAE and extractor (forward and
    # backward) took more than two minutes per process on an H200 with 16 CPU cores.
    "fast_eager": ["--dtype", "bfloat16", "--channels-last", "--vae-checkpointing"],
    # For memory: fast_eager with the UNet's activations recomputed in the backward pass too.
    "lean": ["--dtype", "bfloat16", "--channels-last", "--vae-checkpointing", "--unet-checkpointing"],
    # The cheaper gradients (guidance.gradient, guidance.backward_steps), each beside the paper's path.
    "z0_hat": ["--gradient", "z0_hat"],
    "backward_1": ["--backward-steps", "1"],
    "backward_3": ["--backward-steps", "3"],
    "z0_hat_backward_1": ["--gradient", "z0_hat", "--backward-steps", "1"],
    # Whole schedules: their gradient options, timed per iteration, times their guided iterations per run.
    "paper_schedule": ["--schedule", "sampler=ddpm guidance=paper"],
    "fast_schedule": ["--schedule", "sampler=fast guidance=fast"],
}


def build_extractor(name: str, tiny: bool, digits: bool = False):
    if tiny:
        return TinyExtractor()
    if digits:
        return DigitsCNNExtractor()
    if name == "clip_rn50":
        return OpenCLIPExtractor(model_name="RN50", pretrained=None)
    if name == "resnet50":
        return TorchvisionExtractor(model_name="resnet50", pretrained=None, replace_with_identity="fc")
    return TorchvisionExtractor(
        model_name="vit_h_14",
        pretrained=None,
        replace_with_identity="heads.head",
        input_size=518,
        model_kwargs={"image_size": 518},
    )


def build_backbone(image_size: int, tiny: bool, digits: bool = False) -> DiffusionBackbone:
    """SD 1.4's UNet and VAE (their configs, random weights), fsa's tiny ones, or its digits DDPM."""
    if digits:
        return load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    if tiny:
        unet, vae, _ = tiny_latent_components()
    else:  # the networks of the shipped SD v1 architecture (the text encoder is not needed: zero conditioning)
        architecture = stable_diffusion_architecture()
        unet, vae = UNet2DConditionModel(**architecture["unet"]), AutoencoderKL(**architecture["vae"])
    cond = torch.zeros(1, 77, unet.config.cross_attention_dim)
    return LatentDiffusion(unet, vae, cond, NoiseSchedule.make(), image_size=image_size)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(parts: dict[str, Callable[[], object]]) -> dict[str, int]:
    """FLOPs of one run of each part, by part."""
    # The iteration's arithmetic is that of its parts (the rest is element-wise and negligible); they
    # are counted one by one because FlopCounterMode's module hooks reject the decoder's autograd.grad.
    # Compiled code does not dispatch aten ops one by one, so it is counted run eagerly (same arithmetic).
    flops = {}
    for name, fn in parts.items():
        with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
            fn()
        flops[name.removesuffix("_s")] = int(counter.get_total_flops())
    return flops


def run_benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype)
    torch.manual_seed(0)
    # On CUDA the random weights are made there (SD's UNet and ViT-H/14 initialise in seconds instead of
    # a minute on the CPU); a meta-device probe has no values to return, so --flops-only builds on the CPU.
    with torch.device(device if device.type == "cuda" else "cpu"):
        backbone = build_backbone(args.image_size, args.tiny, args.digits).to(device)
        extractor = build_extractor(args.extractor, args.tiny, args.digits)
        feature_dim = extractor.feature_dim
    extractor = extractor.to(device)
    apply_speed_options(backbone, extractor, speed_options(args))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    target = torch.randn(1, feature_dim, device=device).expand(args.batch, -1)
    z = torch.randn(args.batch, *backbone.latent_shape, device=device)
    abar_t = backbone.schedule.abar(T)
    autocast_device = "cpu" if device.type == "meta" else device.type  # FLOPs do not depend on the dtype
    autocast = torch.autocast(autocast_device, dtype=dtype, enabled=dtype != torch.float32 and device.type != "meta")

    def score(image: torch.Tensor) -> torch.Tensor:
        with autocast:
            features = extractor(extractor.prepare_generated(image))
        return squared_distance(features, target)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def iteration_seconds() -> float:
        """The real decoder, timed between its per-iteration callbacks: warmup + repeats recurrences
        of one timestep (DDIM with one step), the first `warmup` intervals dropped."""
        stamps = [time.perf_counter()]

        def stamp(_snapshot: object) -> None:
            sync()
            stamps.append(time.perf_counter())

        # The paper's guidance (with or without its post-guidance check).
        guidance = FeatureGuidance(
            early_steps=0,
            k=args.warmup + args.repeats + 1,
            post_check=not args.no_post_check,
            gradient=args.gradient,
            backward_steps=args.backward_steps,
        )
        generators = [torch.Generator().manual_seed(i) for i in range(args.batch)]
        guided_decode(
            backbone, DDIMSampler(num_steps=1), guidance, extractor, target, generators, dtype=dtype, on_iteration=stamp
        )
        intervals = [b - a for a, b in itertools.pairwise(stamps)]
        return statistics.median(intervals[args.warmup + 1 :])

    def with_grad_to(x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            x_in = x.detach().requires_grad_()
            with torch.enable_grad():
                forward(x_in).float().sum().backward()
            return x_in.grad

        return run

    def unet(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return backbone.predict_noise(x, T)

    def vae(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return backbone.decode(x)

    def post_check() -> None:
        with torch.no_grad():
            with autocast:
                image = backbone.decode(predict_x0(z, z, abar_t))
            score(image)

    def unet_forward() -> torch.Tensor:
        with torch.no_grad():
            return unet(z)

    def backward_guidance() -> None:  # each step: decode and extract, back to the latent
        for _ in range(args.backward_steps):
            with_grad_to(z, lambda x: score(vae(x)))()

    image = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    # guidance.gradient=z0_hat: the UNet runs forward only
    parts = {"unet_fwd_bwd_s": with_grad_to(z, unet)} if args.gradient == "z_t" else {"unet_fwd_s": unet_forward}
    parts |= {"vae_decode_fwd_bwd_s": with_grad_to(z, vae), "extractor_fwd_bwd_s": with_grad_to(image, score)}
    if args.backward_steps:
        parts["backward_guidance_s"] = backward_guidance
    if not args.no_post_check:
        parts["post_check_s"] = post_check
    flops_per_part = count_flops(parts)
    flops = sum(flops_per_part.values())
    if device.type == "meta":  # --flops-only: shapes without values, so arithmetic without time
        return {
            "image_size": args.image_size,
            "extractor": extractor_name(args),
            "flops_per_iteration": flops,
            "flops_per_part": flops_per_part,
            "schedule": args.schedule,
            "iterations_per_run": args.iterations_per_run,
            "flops_per_run": flops * args.iterations_per_run,
        }
    result = {"iteration_s": iteration_seconds()}
    result |= {name: median_seconds(fn, args.repeats, args.warmup, device) for name, fn in parts.items()}

    parts = sum(v for k, v in result.items() if k != "iteration_s")
    if device.type == "cuda":
        peak_memory, memory_kind = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    else:  # ru_maxrss is in KiB on Linux
        peak_memory, memory_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"
    achieved = flops / result["iteration_s"] / 1e12
    peak_fraction = achieved / args.peak_tflops if args.peak_tflops and device.type == "cuda" else None
    projected = args.iterations_per_run * result["iteration_s"]
    paper_run_s = PAPER_RUN_S[args.extractor if extractor_name(args) in PAPER_RUN_S else "clip_rn50"]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "extractor": extractor_name(args),
        "backbone": "tiny" if args.tiny else "digits" if args.digits else "sd-1.4 shapes (random weights)",
        "image_size": args.image_size,
        "batch": args.batch,
        "speed_options": speed_options(args).enabled(),
        "post_check": not args.no_post_check,
        "gradient": args.gradient,
        "backward_steps": args.backward_steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        **result,
        "post_check_s": result.get("post_check_s", 0.0),
        "sample_iteration_s": result["iteration_s"] / args.batch,
        "parts_sum_s": parts,
        "overhead_ratio": result["iteration_s"] / parts,
        "flops_per_iteration": flops,
        "achieved_tflops": achieved,
        "peak_tflops": args.peak_tflops,
        "peak_fraction": peak_fraction,
        "peak_memory_bytes": int(peak_memory),
        "peak_memory_kind": memory_kind,
        "schedule": args.schedule,
        "iterations_per_run": args.iterations_per_run,
        "projected_run_s": projected,
        "paper_run_s": paper_run_s,
        "paper_iteration_s": paper_run_s / PAPER_ITERATIONS,
        "projected_over_paper": projected / paper_run_s,
    }


def table(r: dict) -> str:
    rows = [
        ("setting", f"{r['backbone']}, {r['extractor']}, {r['image_size']} px, batch {r['batch']}, {r['dtype']}"),
        ("speed options", ", ".join(r["speed_options"]) or "none (paper-faithful)"),
        ("device", r["device"]),
        ("guided iteration", f"{r['iteration_s']:.4f} s   (paper: {r['paper_iteration_s']:.2f} s on an RTX 3090)"),
        ("  per sample", f"{r['sample_iteration_s']:.4f} s   (batch {r['batch']})"),
        ("  UNet fwd+bwd", f"{r['unet_fwd_bwd_s']:.4f} s")
        if "unet_fwd_bwd_s" in r
        else ("  UNet fwd (gradient at z0_hat)", f"{r['unet_fwd_s']:.4f} s"),
        ("  VAE decode fwd+bwd", f"{r['vae_decode_fwd_bwd_s']:.4f} s"),
        ("  extractor fwd+bwd", f"{r['extractor_fwd_bwd_s']:.4f} s"),
        ("  post-check (no grad)", f"{r['post_check_s']:.4f} s" if r["post_check"] else "off"),
        ("  backward guidance", f"{r.get('backward_guidance_s', 0.0):.4f} s   ({r['backward_steps']} steps)"),
        ("  sum of parts", f"{r['parts_sum_s']:.4f} s"),
        ("overhead ratio", f"{r['overhead_ratio']:.3f}   (iteration / sum of parts)"),
        ("FLOPs per iteration", f"{r['flops_per_iteration'] / 1e9:.2f} GFLOP   ({r['achieved_tflops']:.3f} TFLOP/s)"),
    ]
    if r["peak_fraction"] is not None:
        rows.append(("fraction of peak", f"{r['peak_fraction']:.1%} of {r['peak_tflops']} TFLOP/s"))
    rows += [
        ("peak memory", f"{r['peak_memory_bytes'] / 2**30:.2f} GiB   ({r['peak_memory_kind']})"),
        ("projected run", f"{r['projected_run_s']:.0f} s = {r['iterations_per_run']} x iteration"),
        ("paper run", f"{r['paper_run_s']:.0f} s   (projected / paper = {r['projected_over_paper']:.2f})"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def speed_options(args: argparse.Namespace) -> SpeedOptions:
    return SpeedOptions(
        channels_last=args.channels_last,
        compile=args.compile,
        attention=args.attention,
        vae_activation_checkpointing=args.vae_checkpointing,
        unet_activation_checkpointing=args.unet_checkpointing,
    )


def compare(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Each variant of `args.compare` in a fresh process with the common arguments; their figures.

    A variant that fails is recorded with its error and the others still run. With --json the figures so
    far are rewritten after every variant, so a run cut short (a time limit) keeps what it measured."""
    # The caller's arguments but --compare's; the --json added last wins over the caller's.
    common = [a for a in argv if a not in ("--compare", *args.compare)]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.compare:
            out = Path(folder) / f"{name}.json"
            command = [sys.executable, __file__, *common, *VARIANTS[name], "--json", str(out)]
            print(f"--- {name}: {' '.join(VARIANTS[name]) or 'all options off'}", flush=True)
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode == 0:
                results.append({"variant": name, **json.loads(out.read_text())})
            else:
                error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                print(done.stderr[-4000:], file=sys.stderr)
                results.append({"variant": name, "error": error})
            if args.json is not None:
                write_json(args.json, results)
    return results


def schedule_guidance(overrides: str) -> tuple[FeatureGuidance, int]:
    """The guidance options and guided iterations per run of fsa's config composed with `overrides`."""
    cfg = compose_config(shlex.split(overrides))
    guidance = instantiate(cfg.guidance)
    sampler = instantiate(cfg.sampler)
    return guidance, guidance.total_iterations(len(sampler.timesteps(SD_TRAIN_TIMESTEPS)))


def extractor_name(args: argparse.Namespace) -> str:
    return "tiny" if args.tiny else "digits_cnn" if args.digits else args.extractor


def write_json(path: Path, figures: dict | list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")


def comparison_table(results: list[dict]) -> str:
    """Markdown: per variant, seconds per iteration and per sample-iteration, speed-up, memory."""
    measured = [r for r in results if "error" not in r]
    if not measured:
        return "\n".join(f"{r['variant']}: failed ({r['error']})" for r in results)
    base = measured[0]
    lines = [
        f"{base['backbone']}, {base['extractor']}, {base['image_size']} px, on {base['device']}; "
        f"speed-up and memory relative to '{base['variant']}'",
        "",
        "| variant | s / iteration | s / sample-iteration | speed-up | overhead ratio | peak memory (GiB) "
        "| memory ratio | projected run (s) |",
        "|" + "---|" * 8,
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} |" + " |" * 6)
            continue
        lines.append(
            f"| {r['variant']} | {r['iteration_s']:.4f} | {r['sample_iteration_s']:.4f} "
            f"| {base['sample_iteration_s'] / r['sample_iteration_s']:.2f}x | {r['overhead_ratio']:.3f} "
            f"| {r['peak_memory_bytes'] / 2**30:.2f} | {r['peak_memory_bytes'] / base['peak_memory_bytes']:.2f} "
            f"| {r['projected_run_s']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--image-size", type=int, default=None, help="default 512 on CUDA, 64 on CPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="autocast dtype, as the decoder")
    parser.add_argument("--extractor", choices=EXTRACTORS, default="clip_rn50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="fsa's tiny random backbone and extractor")
    parser.add_argument("--digits", action="store_true", help="fsa's embedded digits DDPM and CNN (16 px)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the achieved fraction")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    options = parser.add_argument_group("speed options (fsa/speed.py)")
    options.add_argument("--channels-last", action="store_true")
    options.add_argument("--compile", action="store_true", help="torch.compile of UNet, VAE decoder, extractor")
    options.add_argument("--attention", choices=ATTENTION, default="sdpa")
    options.add_argument("--vae-checkpointing", action="store_true", help="VAE decoder activation checkpointing")
    options.add_argument("--unet-checkpointing", action="store_true", help="UNet activation checkpointing")
    options.add_argument("--no-post-check", action="store_true", help="drop the post-guidance check")
    guidance = parser.add_argument_group("cheaper gradients (guidance.gradient, guidance.backward_steps)")
    guidance.add_argument("--gradient", choices=GRADIENTS, default="z_t", help="z0_hat: no UNet backward")
    guidance.add_argument("--backward-steps", type=int, default=0, help="backward guidance steps per iteration")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device: no time, any size")
    parser.add_argument(
        "--schedule",
        default=None,
        help="fsa overrides (e.g. 'sampler=fast guidance=fast'): their gradient options, and their guided "
        "iterations per run in place of the paper schedule's 12,960",
    )
    parser.add_argument("--compare", nargs="*", choices=tuple(VARIANTS), default=None, help="variants (none: all)")
    args = parser.parse_args(argv)
    if args.compare is not None and not args.compare:
        args.compare = list(VARIANTS)
    if args.flops_only:
        args.device = "meta"
    if args.digits:
        args.image_size = 16  # the embedded model's size
    args.iterations_per_run = PAPER_ITERATIONS
    if args.schedule is not None:
        guidance, args.iterations_per_run = schedule_guidance(args.schedule)
        args.gradient, args.backward_steps = guidance.gradient, guidance.backward_steps
        args.no_post_check = not guidance.post_check
    if args.image_size is None:
        args.image_size = 64 if args.device == "cpu" else 512
    if args.image_size % 8 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("need --image-size a multiple of 8, --batch >= 1, --repeats >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.compare is not None:
        figures: dict | list[dict] = compare(args, argv)
        text = comparison_table(figures)
    elif args.flops_only:
        figures = run_benchmark(args)
        tflop = figures["flops_per_iteration"] / 1e12
        text = (
            f"{figures['extractor']}, {args.image_size} px: {tflop:.4g} TFLOP per guided iteration (batch {args.batch})"
        )
        per_run = tflop * args.iterations_per_run / 1e3
        text += f"\n  x {args.iterations_per_run:,} guided iterations per run: {per_run:.4g} PFLOP"
        if figures["extractor"] in PAPER_RUN_S:
            paper_s = PAPER_RUN_S[args.extractor] / PAPER_ITERATIONS
            text += f"\n  at the paper's {paper_s:.2f} s per iteration: {tflop / paper_s:.1f} TFLOP/s achieved"
    else:
        figures = run_benchmark(args)
        text = table(figures)
    print(text)
    if args.json is None:
        if args.compare is None and not args.flops_only:
            print(json.dumps(figures, indent=2))
    else:
        write_json(args.json, figures)
        if args.compare is not None:
            args.json.with_suffix(".md").write_text(text + "\n")
    failed = args.compare is not None and any("error" in r for r in figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
