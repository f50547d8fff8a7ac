"""`alexnet bench`: throughput, compile time and peak memory of every framework, against the machine's own
float32 matmul roof, with yardsticks (torchvision's AlexNet, each variant without LRN, plain torch.save) and
the cold start of the framework-free commands.

How it measures. The CLI process imports no framework: it times the cold starts, numpy's matmul, and runs one
worker per framework (`python -m alexnet_parity.alexnet_cli.bench_cmd`, pinned to the CPU unless --device gpu). The worker
imports its framework once and forks a child per (variant, path), so each child starts from the same clean
process: its compile time is a first compile, and its peak memory (Linux VmHWM, reset through
/proc/self/clear_refs; on a GPU the framework's allocator statistics) is its own. The worker never touches the
GPU itself: CUDA does not survive a fork, so each child starts it afresh. Pairs
that are compared (a variant and its copy without LRN; torch_impl and torchvision) are built in the same child
and timed alternately, so a neighbour's load on this shared machine slows both alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from alexnet_parity.alexnet_cli._malloc import keep_large_buffers
from alexnet_parity.common import LRN, VARIANTS, get_spec, smallest_input_size
from alexnet_parity.common.engines import benchable, engines, get_engine
from ._json import write_json

# The roof: a ROOF_N^3 float32 matmul (58 GFLOP) in each framework; the fastest framework's best of ROOF_REPEATS.
# On the 2-core AMD EPYC this was tuned on, quiet: TF 470 GFLOP/s at 3072 and 4096 (444 at 2048), JAX 373-447,
# numpy (OpenBLAS) 233, torch.mm (MKL) 197 at every size; the convolutions of torch and TF reach ~440-470, so
# 470 is the hardware's.
ROOF_N = 3072
ROOF_N_GPU = 8192  # 1.1 TFLOP: tens of milliseconds on a data-centre GPU, long enough to time from the host
ROOF_REPEATS = 7
TRAIN_FLOPS = 3  # forward + backward ~ 3x the forward's multiply-adds (weights' and inputs' gradients)
LRN_LIMIT, YARDSTICK_LIMIT, COLD_LIMIT = 0.10, 0.97, 0.5  # the bars, printed as checks


def paths_of(name: str, mode: str | None = None) -> tuple[str, ...]:
    """An engine's execution paths (eager and compiled, where it has both); with `mode`, those that can time it."""
    return tuple(p.name for p in benchable()[name].bench_paths if mode is None or mode in p.modes)


def path_help() -> dict[str, str]:
    return {p.name: p.help for e in benchable().values() for p in e.bench_paths}


def framework_modules() -> tuple[str, ...]:
    """Every module an engine brings in: what a cold start must not import."""
    return tuple(dict.fromkeys(m for e in engines().values() for m in e.modules))


def add_arguments(p):
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help=f"variants to run (default all): {', '.join(VARIANTS)}")
    p.add_argument("--frameworks", help=f"comma-separated subset of {','.join(benchable())} (default: all; "
                   "with --mode train, those that can train: " + ",".join(n for n in benchable() if paths_of(n, "train"))
                   + ")")
    p.add_argument("--paths", default="all", help="execution paths, comma-separated: "
                   + "; ".join(f"{k}: {v}" for k, v in path_help().items()) + " (default all)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--input-size", help="square input size for every variant, or 'min' for each one's smallest "
                   "(default: each variant's own)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="where the models run (default cpu); gpu: the first GPU each framework sees")
    p.add_argument("--tf32", choices=("off", "on"),
                   help="with --device gpu: TensorFloat-32 for float32 matmuls and convolutions in every framework "
                   "(default off: true float32, as the parity suite runs)")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="infer: forward in eval mode; train: forward + backward (gradients), dropout on")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per model, median reported (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one (default 2)")
    p.add_argument("--lrn", choices=("all", "first", "none"), default="first",
                   help="time each LRN variant again without its LRN layers: all of them, the first one "
                   "run (default), or none")
    p.add_argument("--no-yardstick", action="store_true", help="skip torchvision's AlexNet next to torch_impl's")
    p.add_argument("--no-convert", action="store_true", help="skip the checkpoint conversion timing")
    p.add_argument("--cold-runs", type=int, default=5, help="runs of each cold-start command (default 5; 0 skips)")
    p.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw throughput, roof fraction, compile time and memory to a PNG")


# ===================================================================================== the CLI side ======
def _plan(args) -> dict:
    """Validated options as the plain dict every worker gets."""
    variants = args.variants or list(VARIANTS)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if args.frameworks is None:  # every engine that can time this mode
        frameworks = [n for n in benchable() if paths_of(n, args.mode)]
    else:
        frameworks = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    for n in frameworks:
        if n not in benchable():
            raise ValueError(f"--frameworks: unknown {n!r}; choose from {', '.join(benchable())}")
        if not paths_of(n, args.mode):
            modes = dict.fromkeys(m for p in benchable()[n].bench_paths for m in p.modes)
            raise ValueError(f"--mode {args.mode}: {n} has no {args.mode} path (it times {', '.join(modes)} only); "
                             "leave it out of --frameworks")
    all_paths = [p for n in frameworks for p in paths_of(n, args.mode)]
    paths = all_paths if args.paths == "all" else [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in paths:
        if p not in path_help():
            raise ValueError(f"--paths: unknown {p!r}; choose from {', '.join(path_help())}")
    if not any(p in paths for p in all_paths):
        raise ValueError(f"--paths {args.paths}: none of them belongs to {', '.join(frameworks)}")
    for name, value in (("--batch", args.batch), ("--repeats", args.repeats)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if args.warmup < 0 or args.cold_runs < 0:
        raise ValueError("--warmup and --cold-runs cannot be negative")
    if args.tf32 and args.device != "gpu":
        raise ValueError("--tf32 applies to --device gpu only (a CPU has no TensorFloat-32)")
    sizes = {}
    for v in variants:
        if args.input_size in (None, "min"):
            sizes[v] = smallest_input_size(v) if args.input_size == "min" else VARIANTS[v].input_size
        else:
            try:
                sizes[v] = int(args.input_size)
            except ValueError:
                raise ValueError(f"--input-size must be a whole number or 'min', got {args.input_size!r}") from None
        get_spec(v, input_size=sizes[v])  # raises the spec's one-line message for a size too small
    lrn_variants = [v for v in variants if any(isinstance(layer, LRN) for layer in get_spec(v).layers)]
    lrn = {"all": lrn_variants, "first": lrn_variants[:1], "none": []}[args.lrn]
    return {"variants": variants, "sizes": sizes, "frameworks": frameworks, "paths": paths, "batch": args.batch,
            "device": args.device, "tf32": (args.tf32 or "off") if args.device == "gpu" else None,
            "mode": args.mode, "repeats": args.repeats, "warmup": args.warmup, "lrn": lrn,
            "yardstick": not args.no_yardstick, "convert": not args.no_convert}


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def numpy_roof() -> dict:
    import numpy as np

    a, b = (np.random.default_rng(0).standard_normal((ROOF_N, ROOF_N), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    return measure_roof("numpy", lambda: np.matmul(a, b, out=c))


def measure_roof(who: str, matmul, repeats: int = ROOF_REPEATS, n: int = ROOF_N) -> dict:
    """GFLOP/s of `matmul` (one n^3 product): the fastest of `repeats` after one warm-up. The fastest, not
    the median: a neighbour on the machine can only slow a matmul down, so the best time is the nearest to
    what the hardware does (the models' medians are then fractions of it)."""
    matmul()
    machine0, own0, wall0 = _machine_busy_s(), time.process_time(), time.perf_counter()
    seconds = _times(matmul, repeats)
    flops = 2 * n ** 3
    return {"framework": who, "n": n, "seconds": seconds, "gflops": flops / min(seconds) / 1e9,
            "gflops_median": flops / statistics.median(seconds) / 1e9,
            "others_cpu": _others_share(machine0, own0, wall0)}


def _alexnet_command() -> list[str]:
    """How a user runs the CLI: the installed console script beside this Python, else `python -m`."""
    script = shutil.which("alexnet", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "alexnet_parity.alexnet_cli"]


_IMPORTS_PROBE = ("import atexit, json, sys\n"
                  "atexit.register(lambda: print('@@modules ' + json.dumps(sorted("
                  "{m.split('.')[0] for m in sys.modules} & set(%r))), file=sys.stderr))\n"
                  "from alexnet_parity.alexnet_cli.main import main\nsys.exit(main(sys.argv[1:]))\n")


def cold_start(runs: int) -> list[dict]:
    """Wall time of `alexnet summary paper` and `alexnet --help` in fresh processes, and which framework
    modules each one imported (read from sys.modules at its exit)."""
    out = []
    for argv in (["summary", "paper"], ["--help"]):
        cmd = _alexnet_command() + argv
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            walls.append(time.perf_counter() - t)
        probe = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE % (framework_modules(),), *argv],
                               capture_output=True, text=True)
        found = [line for line in probe.stderr.splitlines() if line.startswith("@@modules ")]
        if probe.returncode != 0 or not found:
            raise RuntimeError(f"`alexnet {' '.join(argv)}` failed: {probe.stderr.strip()[-300:]}")
        out.append({"command": "alexnet " + " ".join(argv), "seconds": walls,
                    "median_s": statistics.median(walls), "frameworks_imported": json.loads(found[-1][10:])})
        _say(f"cold start `alexnet {' '.join(argv)}`: {statistics.median(walls):.3f} s median of {runs}")
    return out


_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl|I0000 |To enable the following instructions|"
                       r"This TensorFlow binary is optimized)")


def run_worker(framework: str, plan: dict) -> list[dict]:
    """One framework's measurements, from a worker process that sees only the CPU, or for --device gpu the GPUs
    too, with memory taken as it is needed (not JAX's 75% up front, nor TF's whole GPU)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", **get_engine(framework).env)
    if plan["device"] == "cpu":
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    else:
        env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_FORCE_GPU_ALLOW_GROWTH="true")
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        out = os.path.join(tmp, "results.jsonl")
        job = json.dumps({**plan, "framework": framework, "out": out, "tmp": tmp})
        proc = subprocess.Popen([sys.executable, "-m", "alexnet_parity.alexnet_cli.bench_cmd", job], env=env,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        for line in proc.stderr:  # progress through; TensorFlow's start-up chatter (which ignores
            if not _TF_NOISE.search(line):  # TF_CPP_MIN_LOG_LEVEL since it moved to absl) left out
                sys.stderr.write(line)
        proc.wait()
        records = []
        if os.path.exists(out):
            with open(out) as fh:
                records = [json.loads(line) for line in fh if line.strip()]
        if proc.returncode != 0:
            records.append({"kind": "error", "framework": framework,
                            "error": f"worker exited with status {proc.returncode}"})
        return records


def run(args) -> int:
    plan = _plan(args)
    started = time.perf_counter()
    load_before = os.getloadavg()
    _say(f"{len(plan['variants'])} variants x {', '.join(plan['frameworks'])}, batch {plan['batch']}, {plan['mode']}, "
         f"{plan['warmup']} warm-up + {plan['repeats']} timed steps; load average {load_before[0]:.2f}")
    records = []
    if args.cold_runs:
        records += [{"kind": "cold_start", **c} for c in cold_start(args.cold_runs)]
    if plan["device"] == "cpu":  # on a GPU the roof is the frameworks' own GPU matmuls
        records.append({"kind": "roof", **numpy_roof()})
        _say(f"numpy matmul {ROOF_N}^3: {records[-1]['gflops']:.0f} GFLOP/s")
    for fw in plan["frameworks"]:
        if not get_engine(fw).available():
            _say(f"{fw}: not installed, left out")
            records.append({"kind": "error", "framework": fw, "error": "not installed"})
            continue
        if not any(p in plan["paths"] for p in paths_of(fw, plan["mode"])):
            continue
        records += run_worker(fw, plan)
    report = build_report(plan, records, load_before, os.getloadavg(), time.perf_counter() - started)
    print(render(report))
    if args.json:
        write_json(args.json, report)
    if args.plot and not report["results"]:
        print(f"no model ran: {args.plot} not drawn")
    elif args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 1 if report["errors"] else 0


# ============================================================================== report: numbers -> text ==
def _median_rate(seconds: list[float], batch: int) -> float:
    return batch / statistics.median(seconds)


def build_report(plan, records, load_before, load_after, wall) -> dict:
    roofs = [r for r in records if r["kind"] == "roof"]
    roof = max((r["gflops"] for r in roofs), default=None)  # None: no framework could run (e.g. no GPU)
    flops_per_macs = 2 * (TRAIN_FLOPS if plan["mode"] == "train" else 1)
    results = []
    for r in (r for r in records if r["kind"] == "model"):
        rate = _median_rate(r["seconds"], plan["batch"])
        rates = sorted(plan["batch"] / s for s in r["seconds"])
        results.append({**r, "images_per_s": rate, "images_per_s_min": rates[0], "images_per_s_max": rates[-1],
                        "gflops": r["macs"] * flops_per_macs * rate / 1e9,
                        "roof_fraction": r["macs"] * flops_per_macs * rate / 1e9 / roof})
    by_key = {(r["framework"], r["path"], r["model"]): r for r in results}

    def paired(a, b) -> float:
        """Median over rounds of a's step time / b's: the two ran back to back in each round, so a load that
        comes and goes cancels out of each ratio."""
        return statistics.median(x / y for x, y in zip(a["seconds"], b["seconds"]))
    lrn, yard = [], []
    for r in results:
        if r["role"] == "no_lrn":
            base = by_key[(r["framework"], r["path"], r["variant"])]
            lrn.append({"variant": r["variant"], "framework": r["framework"], "path": r["path"],
                        "with_lrn": base["images_per_s"], "without_lrn": r["images_per_s"],
                        "lrn_adds": paired(base, r) - 1})
        if r["role"] == "yardstick":
            base = by_key[(r["framework"], r["path"], r["variant"])]
            yard.append({"framework": r["framework"], "path": r["path"],
                         "yardstick": r.get("yardstick_name", r["model"]),
                         "torch_impl": base["images_per_s"], "torchvision": r["images_per_s"],
                         "ratio": 1 / paired(base, r), "max_abs_diff": r.get("max_abs_diff")})
    info = {r["framework"]: r for r in records if r["kind"] == "info"}
    gpu = next((r["device_name"] for r in roofs if r.get("device_name")), None)
    return {"command": "alexnet " + shlex.join(sys.argv[1:]),
            "plan": plan, "machine": {**_machine(), "gpu": gpu},
            "versions": {k: v.get("versions", {}) for k, v in info.items()},
            "threads": {k: v.get("threads") for k, v in info.items()},
            "malloc": sorted({v["malloc"] for v in info.values() if v.get("malloc")}),
            "load_average_before": list(load_before), "load_average_after": list(load_after), "wall_s": wall,
            "flops_per_image": "2 x MACs" + (" x 3 (forward + backward)" if plan["mode"] == "train" else ""),
            "roof_gflops": roof, "roofs": roofs, "results": results, "lrn_cost": lrn, "yardstick": yard,
            "conversion": [r for r in records if r["kind"] == "conversion"],
            "cold_start": [r for r in records if r["kind"] == "cold_start"],
            "errors": [r for r in records if r["kind"] == "error"]}


def _machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0]}


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths), *map(fmt, rows[1:])])


def render(report: dict) -> str:
    plan = report["plan"]
    m = report["machine"]
    on_gpu = plan.get("device") == "gpu"
    where = (f"GPU {m.get('gpu') or '(none found)'}, TF32 {plan['tf32']}; host {m['cpu'] or 'CPU'}" if on_gpu
             else f"{m['cpu'] or 'CPU'}, {m['cores']} cores")
    lines = [f"alexnet bench: {plan['mode']}, batch {plan['batch']}, median of {plan['repeats']} steps after "
             f"{plan['warmup']} warm-up; {where}; load average "
             f"{report['load_average_before'][0]:.2f} before, {report['load_average_after'][0]:.2f} after; "
             + (", ".join(report.get("malloc", [])) or "malloc as the system has it")]
    if report["roofs"]:
        lines.append(f"roof: float32 {report['roofs'][0]['n']}^3 matmul, fastest of {ROOF_REPEATS} in the fastest "
                     f"framework: {report['roof_gflops']:.0f} GFLOP/s ("
                     + ", ".join(f"{r['framework']} {r['gflops']:.0f}" for r in report["roofs"])
                     + "; other processes took "
                     + ", ".join("-" if r["others_cpu"] is None else f"{100 * r['others_cpu']:.0f}%"
                                 for r in report["roofs"]) + " of the CPU meanwhile)")
    lines.append("")
    rows = [["variant", "size", "framework", "path", "img/s", "spread", "GFLOP/s", "% roof", "compile s", "params MB",
             "peak MB", "others"]]
    for r in report["results"]:
        if r["role"] != "main":
            continue
        spread = (r["images_per_s_max"] - r["images_per_s_min"]) / 2 / r["images_per_s"]
        rows.append([r["variant"], str(r["input_size"]), r["framework"], r["path"], f"{r['images_per_s']:.1f}",
                     f"+-{100 * spread:.0f}%", f"{r['gflops']:.0f}", f"{100 * r['roof_fraction']:.0f}%",
                     f"{r['compile_s']:.2f}", f"{r['model_mb']:.0f}", f"{r['peak_mb']:.0f}",
                     "-" if r["others_cpu"] is None else f"{100 * r['others_cpu']:.0f}%"])
    lines.append(_table(rows, right={4, 5, 6, 7, 8, 9, 10, 11}) if len(rows) > 1 else "(no model results)")
    lines.append("img/s: median; spread: half the min..max range; % roof: GFLOP/s over the roof; compile s: first "
                 "step minus a steady one (trace + compile; eager: one-off set-up); params MB: resident after "
                 "building; peak MB: highest resident while compiling and running, above the process before it"
                 + (" (on the GPU: the framework's own count of GPU memory); " if on_gpu else "; ") +
                 "others: share of the machine's CPU time other processes took while it was timed "
                 "(0% = a quiet machine)")
    if report["lrn_cost"]:
        rows = [["variant", "framework", "path", "with LRN img/s", "without", "LRN adds", f"<= {LRN_LIMIT:.0%}"]]
        for r in report["lrn_cost"]:
            rows.append([r["variant"], r["framework"], r["path"], f"{r['with_lrn']:.1f}", f"{r['without_lrn']:.1f}",
                         f"{100 * r['lrn_adds']:+.1f}%", "yes" if r["lrn_adds"] <= LRN_LIMIT else "NO"])
        lines += ["", "LRN cost: the same variant with its LRN layers removed, timed alternately in one process; "
                  "median over rounds of (step with LRN / step without) - 1",
                  _table(rows, right={3, 4, 5})]
    if report["yardstick"]:
        rows = [["path", "torch_impl img/s", "yardstick", "img/s", "ratio", f">= {YARDSTICK_LIMIT}", "max|diff|"]]
        for r in report["yardstick"]:
            rows.append([r["path"], f"{r['torch_impl']:.1f}", r["yardstick"], f"{r['torchvision']:.1f}",
                         f"{r['ratio']:.3f}", "yes" if r["ratio"] >= YARDSTICK_LIMIT else "NO",
                         f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"])
        lines += ["", "torch_impl's torchvision variant against torchvision's own AlexNet (same weights, timed "
                  "alternately; ratio: median over rounds of yardstick step / torch_impl step)",
                  _table(rows, right={1, 3, 4})]
    for c in report["conversion"]:
        if c.get("error"):
            lines += ["", f"conversion: {c['error']}"]
            continue
        lines += ["", f"checkpoint of {c['variant']} ({c['params']:,} parameters, {c['mb']:.0f} MB), median of "
                  f"{len(c['plain_s'])}: {c['convert_label']} {statistics.median(c['convert_s']):.2f} s; "
                  f"{c['plain_label']} {statistics.median(c['plain_s']):.2f} s"]
    if report["cold_start"]:
        rows = [["command", "median s", "runs", f"< {COLD_LIMIT} s", "frameworks imported"]]
        for c in report["cold_start"]:
            rows.append([c["command"], f"{c['median_s']:.3f}", str(len(c["seconds"])),
                         "yes" if c["median_s"] < COLD_LIMIT else "NO", ", ".join(c["frameworks_imported"]) or "none"])
        lines += ["", "cold start (fresh process, wall)", _table(rows, right={1, 2})]
    for e in report["errors"]:
        lines.append(f"ERROR {e['framework']}: {e['error']}")
    lines.append(f"\n{report['wall_s']:.0f} s in all")
    return "\n".join(lines)


def _grouped_bars(ax, rows, key, groups, series, colors, err=False):
    """One bar per (group, series) from rows with "variant", "framework", "path"; returns [(bar, row)]."""
    width = 0.8 / max(1, len(series))
    drawn = []
    for i, s in enumerate(series):
        picked = [(j, r) for j, g in enumerate(groups) for r in rows
                  if r["variant"] == g and (r["framework"], r["path"]) == s]
        if not picked:
            continue
        xs = [j + (i - (len(series) - 1) / 2) * width for j, _ in picked]
        ys = [r[key] for _, r in picked]
        yerr = ([[r[key] - r[f"{key}_min"] for _, r in picked], [r[f"{key}_max"] - r[key] for _, r in picked]]
                if err else None)
        bars = ax.bar(xs, ys, width, color=colors.get(s[1]), label=f"{s[0]} {s[1]}", yerr=yerr, capsize=2)
        drawn += list(zip(bars, (r for _, r in picked)))
    ax.set_xticks(range(len(groups)), groups, rotation=15, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return drawn


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in report["results"] if r["role"] == "main"]
    variants = list(dict.fromkeys(r["variant"] for r in main))
    series = list(dict.fromkeys((r["framework"], r["path"]) for r in main))
    colors = {p.name: p.color for e in benchable().values() for p in e.bench_paths}
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
    (rate, comp), (mem, lrn) = axes
    for bar, r in _grouped_bars(rate, main, "images_per_s", variants, series, colors, err=True):
        rate.annotate(f"{100 * r['roof_fraction']:.0f}%", (bar.get_x() + bar.get_width() / 2, r["images_per_s_max"]),
                      ha="center", va="bottom", fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
    rate.set_title(f"images/s, median (whisker: min..max); label: % of the {report['roof_gflops']:.0f} GFLOP/s "
                   "matmul roof", fontsize=9)
    rate.legend(fontsize=7)
    _grouped_bars(comp, main, "compile_s", variants, series, colors)
    comp.set_yscale("log")
    comp.set_title("first step minus a steady one: trace + compile, s (log)", fontsize=9)
    _grouped_bars(mem, main, "peak_mb", variants, series, colors)
    mem.set_title("peak resident memory while compiling and running, MB", fontsize=9)
    if report["lrn_cost"]:
        rows = [{**r, "adds": 100 * r["lrn_adds"]} for r in report["lrn_cost"]]
        _grouped_bars(lrn, rows, "adds", list(dict.fromkeys(r["variant"] for r in rows)), series, colors)
        lrn.axhline(100 * LRN_LIMIT, color="black", lw=0.8, ls=":", label=f"{LRN_LIMIT:.0%}")
        lrn.axhline(0, color="black", lw=0.5)
        lrn.set_title("LRN's cost: step time with LRN / without - 1, %", fontsize=9)
    else:
        lrn.axis("off")
    plan = report["plan"]
    fig.suptitle(f"alexnet bench: {plan['mode']}, batch {plan['batch']}, {report['machine']['cores']} CPU cores "
                 f"({report['machine']['cpu']}), load average {report['load_average_before'][0]:.2f}", fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


# ================================================================================ the worker side ========
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{field}:\s+(\d+)", fh.read(), re.M).group(1))


def _machine_busy_s() -> float | None:
    """CPU seconds all processes have spent on this machine (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is inside user


def _others_share(machine0, own0, wall0) -> float | None:
    """The share of the machine's CPU time that other processes took since (machine0, own0, wall0)."""
    machine1, own1, wall1 = _machine_busy_s(), time.process_time(), time.perf_counter()
    if machine0 is None or machine1 is None:
        return None
    return max(0.0, (machine1 - machine0) - (own1 - own0)) / ((wall1 - wall0) * (os.cpu_count() or 1))


def _reset_peak() -> bool:
    """Reset Linux's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _without_lrn(spec):
    return dataclasses.replace(spec, layers=tuple(layer for layer in spec.layers if not isinstance(layer, LRN)))


def _in_child(fn):
    """Run fn() in a forked child (clean memory, first compile) and return its list of records; inline where
    the OS has no fork. The parent worker never computes, so no thread pool is running when it forks."""
    if not hasattr(os, "fork"):
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            payload = fn()
        except BaseException as err:  # reported, not raised: the parent goes on with the next job
            payload, code = [{"kind": "error", "error": f"{type(err).__name__}: {err}"}], 1
        with os.fdopen(write, "w") as fh:
            json.dump(payload, fh)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return [{"kind": "error", "error": f"child died (wait status {status})"}]
    return json.loads(data)


def _measure_group(runner, fw: str, path: str, job: dict, entries: list[tuple[str, str, object]]) -> list[dict]:
    """Build, compile and warm up each (model name, role, builder) in turn, measuring its memory; then time
    them alternately, `repeats` rounds."""
    import numpy as np

    variant, size = job["variant"], job["sizes"][job["variant"]]
    spec = get_spec(variant, input_size=size)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((job["batch"], *spec.input_shape), dtype=np.float32)
    labels = rng.integers(0, spec.num_classes, job["batch"]).astype(np.int64)  # each runner casts as it needs
    x, y = runner.inputs(x_np, labels)
    on_gpu = runner.memory_mb() is not None

    def held_mb():  # on a GPU its memory as the framework counts it, else this process's resident memory
        return runner.memory_mb() if on_gpu else _rss_kb("VmRSS") / 1024
    built = []
    for model_name, role, make in entries:
        base = held_mb()
        model, spec_used, extra = make()
        extra["model_mb"] = held_mb() - base  # the parameters, as this framework holds them
        # then the peak of running it: parameters, activations, workspace (and on the CPU the compiler)
        if on_gpu:
            runner.reset_peak()
        can_peak = on_gpu or _reset_peak()
        t = time.perf_counter()
        step = runner.step(model, path, job["mode"], x, y)
        step()
        first = time.perf_counter() - t
        for _ in range(job["warmup"]):
            step()
        high = runner.peak_mb() if on_gpu else _rss_kb("VmHWM") / 1024 if can_peak else held_mb()
        peak = high - base
        built.append((model_name, role, spec_used, step, first, peak, extra))
        _say(f"  {fw} {path} {model_name}: first step {first:.2f} s, parameters {extra['model_mb']:.0f} MB, "
             f"peak {peak:.0f} MB")
    times = {name: [] for name, *_ in built}
    machine0, own0, wall0 = _machine_busy_s(), time.process_time(), time.perf_counter()
    for _ in range(job["repeats"]):
        for name, _, _, step, *_ in built:
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    others = _others_share(machine0, own0, wall0)
    out = []
    for name, role, spec_used, _, first, peak, extra in built:
        step_s = statistics.median(times[name])
        out.append({"kind": "model", "framework": fw, "path": path, "variant": variant, "model": name, "role": role,
                    "input_size": size, "batch": job["batch"], "macs": spec_used.mac_count(),
                    "seconds": times[name], "step_s": step_s, "first_step_s": first,
                    "compile_s": max(0.0, first - step_s), "peak_mb": peak, "others_cpu": others, **extra})
    return out


def _job_entries(runner, fw: str, path: str, job: dict):
    """The models one child measures: the variant; its copy without LRN; a yardstick beside it where the
    engine's runner has one for the variant (torch: torchvision's own AlexNet)."""
    import numpy as np

    from alexnet_parity.parity_tests.core import parity_weights

    variant = job["variant"]
    spec = get_spec(variant, input_size=job["sizes"][variant])
    weights = parity_weights(spec)  # He-scaled: no layer decays into denormals, which would slow every framework
    entries = [(variant, "main", lambda: (runner.build(spec, weights), spec, {}))]
    if variant in job["lrn"]:
        bare = _without_lrn(spec)
        entries.append((f"{variant} without LRN", "no_lrn", lambda: (runner.build(bare, weights), bare, {})))
    if job["yardstick"] and variant in getattr(runner, "yardstick_variants", ()):
        def yardstick():
            model, name = runner.yardstick(spec, weights)
            # same weights, same numbers: proves the yardstick is the same network
            xs = np.random.default_rng(1).standard_normal((2, *spec.input_shape), dtype=np.float32)
            diff = float(abs(runner.output(model, xs) - runner.output(runner.build(spec, weights), xs)).max())
            return model, spec, {"yardstick_name": name, "max_abs_diff": diff}
        entries.append(("torchvision yardstick", "yardstick", yardstick))
    return entries


def _conversion(runner, job: dict) -> list[dict]:
    """The engine's checkpoint conversion against its framework's plain save and load, on one full
    checkpoint, timed alternately three times (runner.conversion gives the two and a bit-exactness check)."""
    from alexnet_parity.parity_tests.core import parity_weights

    variant = job["variant"]
    spec = get_spec(variant, input_size=job["sizes"][variant])
    weights = parity_weights(spec)
    base = {"kind": "conversion", "variant": variant, "params": spec.param_count(),
            "mb": sum(w.nbytes for w in weights.values()) / 2**20}
    convert, plain, check, (convert_label, plain_label) = runner.conversion(spec, weights, job["tmp"])
    convert_s, plain_s = [], []
    for _ in range(3):
        convert_s += _times(convert, 1)
        plain_s += _times(plain, 1)
    return [{**base, "convert_s": convert_s, "plain_s": plain_s, "bit_exact": check(),
             "convert_label": convert_label, "plain_label": plain_label}]


def worker(job: dict) -> None:
    fw = job["framework"]
    out = open(job["out"], "a")

    def emit(records):
        for r in records:
            r.setdefault("framework", fw)
            out.write(json.dumps(r) + "\n")
            if r["kind"] == "error":
                _say(f"  {fw}: ERROR {r['error']}")
        out.flush()

    t = time.perf_counter()
    runner = get_engine(fw).make_runner(job["device"], job["tf32"])
    runner.tmp = job["tmp"]
    emit([{"kind": "info", "versions": runner.versions, "threads": runner.threads, "malloc": job.get("malloc"),
           "import_s": time.perf_counter() - t}])
    versions = ", ".join(f"{k} {v}" for k, v in runner.versions.items())
    _say(f"{fw}: {versions} imported in {time.perf_counter() - t:.1f} s")

    def roof():
        name = runner.check_device()
        n = ROOF_N_GPU if name else ROOF_N
        return [{"kind": "roof", **measure_roof(fw, runner.matmul(n), n=n), "device_name": name}]
    roofs = _in_child(roof)
    emit(roofs)
    if job["device"] == "gpu" and any(r["kind"] == "error" for r in roofs):
        out.close()
        return  # no GPU for this framework: its error says so once
    paths = [p for p in paths_of(fw, job["mode"]) if p in job["paths"]]
    for variant in job["variants"]:
        for path in paths:
            _say(f"{fw} {path} {variant} (input {job['sizes'][variant]}, batch {job['batch']}, {job['mode']})")
            one = {**job, "variant": variant}
            emit(_in_child(lambda: _measure_group(runner, fw, path, one, _job_entries(runner, fw, path, one))))
    if job["convert"] and hasattr(runner, "conversion"):
        _say(f"{fw}: checkpoint conversion")
        emit(_in_child(lambda: _conversion(runner, {**job, "variant": job["variants"][0]})))
    out.close()


if __name__ == "__main__":
    malloc = keep_large_buffers()  # as `alexnet` does in its own process, before the framework's threads
    worker({**json.loads(sys.argv[1]), "malloc": malloc})
