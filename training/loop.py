"""The training loop, once for every framework: the paper's recipe (SGD with momentum and weight decay,
lr divided by 10 when the validation error stops improving) driven through a training.frameworks adapter.

    from alexnet_parity.training.loop import RunConfig, train
    history = train(RunConfig(framework="flax", variant="paper", num_classes=10, epochs=3, batch=32),
                    train_source, val_source, out="runs/paper")

Everything random is a function of (seed, epoch, step): the initial weights (common.init_weights, the same
in every framework), the image order, crops, flips and lighting (training.Batches) and the dropout masks
(the adapters seed them per step). A checkpoint therefore needs only the weights, the velocity, the lr
schedule and the position (epoch, step) to continue exactly where it stopped.

Files in `out`:
  checkpoint.safetensors  weights + "velocity/<name>" tensors, the run's state as JSON metadata (resume)
  model.safetensors       the checkpoint's weights alone, canonical format (alexnet eval / predict / convert)
  metrics.csv, metrics.json, metrics.png   one row per epoch

Each save writes all of them into out/.alexnet-staging/ first, then renames them into place, the checkpoint
first: it is the commit point. It records the SHA-256 of the model file that goes with it, so a run that died
between the renames (kill -9) is noticed and repaired from the checkpoint when it is resumed. A run holds an
flock on `out` for its whole life (a second run into the same folder is refused) and, holding it, removes a
staging folder a killed run left behind.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import queue
import shutil
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_parity.common import Spec, get_spec, init_weights
from alexnet_parity.common.optim import PaperSGD, PlateauSchedule

from .augment import average_softmax
from .loader import Batches
from .sources import Source, Subset

CHECKPOINT, MODEL = "checkpoint.safetensors", "model.safetensors"
METRICS_CSV, METRICS_JSON, METRICS_PNG = "metrics.csv", "metrics.json", "metrics.png"
CHECKPOINT_TAG = "alexnet-parity/train-checkpoint/1"
STAGING = ".alexnet-staging"  # in out: where a save writes every file before renaming it into place
VELOCITY = "velocity/"
# train_loss: the mean of the epoch's step losses (training mode: dropout, augmentation), what SGD saw;
# train_top1: eval mode, centre crops, on a fixed sample of training images as large as the validation set
# (the steps' own logits are not returned by the impls' train_step); img_per_s: the epoch's training images
# over its wall time, batch preparation included, evaluation excluded
COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "img_per_s", "seconds")
# settings a resumed run must share with the checkpoint (framework and epochs may change; lr is a new base rate)
FIXED = ("variant", "input_size", "num_classes", "batch", "seed", "data", "val_fraction")


@dataclass(frozen=True)
class RunConfig:
    framework: str = ""  # the engine, by its --framework name; "": the first installed
    variant: str = "paper"
    input_size: int | None = None  # None: the variant's own
    num_classes: int = 1000
    epochs: int = 90
    batch: int = 128
    lr: float = 0.01
    seed: int = 0
    data: str = ""  # what the data was, recorded so that a resume on other data is refused
    val_fraction: float = 0.1
    patience: int = 1  # epochs without a better validation error before lr / 10 (the paper: "stopped improving")

    def spec(self) -> Spec:
        return get_spec(self.variant, input_size=self.input_size, num_classes=self.num_classes)


def dropout_seed(seed: int, epoch: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, 4]).generate_state(1)[0] >> 1)  # < 2**31 for every RNG


# --- checkpoints ---------------------------------------------------------------------------------------

class OutputError(ValueError):
    """A file of the run could not be written (read-only, full disk, permissions): one line for the user."""


def _write_error(path, err: BaseException) -> OutputError:
    reason = getattr(err, "strerror", None) or str(err)
    return OutputError(f"cannot write {path}: {reason}")


def save_checkpoint(path, spec: Spec, weights: dict, velocity: dict, state: dict) -> None:
    """Writes `path` as it is given (train() gives a path in the staging folder and renames it itself)."""
    from safetensors.numpy import save_file

    # contiguous copies: safetensors.numpy writes a transposed view's memory in storage order, silently
    # (an NHWC impl's fc6 comes back as such a view)
    tensors = {**{n: np.ascontiguousarray(weights[n], np.float32) for n in spec.weight_shapes()},
               **{VELOCITY + n: np.ascontiguousarray(velocity[n], np.float32) for n in spec.weight_shapes()}}
    meta = {"format": CHECKPOINT_TAG, "variant": spec.variant, "input_size": str(spec.input_size),
            "num_classes": str(spec.num_classes), "spec": spec.to_json(), "state": json.dumps(state)}
    save_file(tensors, str(path), metadata=meta)


def _regular(path: Path) -> None:
    """FileNotFoundError / ValueError unless `path` is a regular file: a FIFO in its place blocks the reader forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} not found") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file")


def _is(value, kind) -> bool:
    # JSON's true/false are Python ints too; a count that is a bool (or a string "3") is an edited file
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


_CONFIG_TYPES = {f.name: (int if f.name == "input_size" else type(f.default)) for f in dataclasses.fields(RunConfig)}
_STATE_TYPES = {"epoch": int, "step": int, "global_step": int, "schedule": dict, "partial": dict, "history": list,
                "config": dict}
_SCHEDULE_TYPES = {"lr": float, "best": float, "bad_epochs": int}
_PARTIAL_TYPES = {"loss_sum": float, "steps": int, "images": int, "seconds": float}


def _check_fields(path, where: str, doc: dict, types: dict, optional=()) -> None:
    for key, kind in types.items():
        if key not in doc:
            if key in optional:
                continue
            raise ValueError(f"{path}: the training state has no {where}{key!r}; the file was edited or is not "
                             f"one alexnet train wrote")
        value = doc[key]
        if not (_is(value, kind) or (key in optional and value is None)):
            raise ValueError(f"{path}: the training state's {where}{key!r} is {value!r}, not a {kind.__name__}")
        if kind is int and value is not None and value < 0:
            raise ValueError(f"{path}: the training state's {where}{key!r} is {value}, below 0")


def parse_state(path, text) -> dict:
    """The run state a checkpoint's metadata holds, checked field by field: an edited or foreign file is a
    ValueError naming the file and the field, never a KeyError or TypeError later in the loop."""
    if text is None:
        raise ValueError(f"{path}: a training checkpoint without its training state")
    try:
        state = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: the training state is not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the training state is {type(state).__name__}, not a JSON object")
    _check_fields(path, "", state, _STATE_TYPES)
    _check_fields(path, "schedule ", state["schedule"], _SCHEDULE_TYPES)
    _check_fields(path, "partial ", state["partial"], _PARTIAL_TYPES)
    _check_fields(path, "config ", state["config"], _CONFIG_TYPES, optional=("input_size",))
    if not (state["schedule"]["lr"] > 0 and math.isfinite(state["schedule"]["lr"])):
        raise ValueError(f"{path}: the training state's lr is {state['schedule']['lr']}, not a positive number")
    for i, row in enumerate(state["history"]):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: the training state's history[{i}] is not an object")
        _check_fields(path, f"history[{i}] ", row, {k: float for k in COLUMNS})
    if state["partial"]["steps"] != state["step"] or state["global_step"] < state["step"]:
        raise ValueError(f"{path}: the training state's step {state['step']}, global_step {state['global_step']} "
                         f"and partial steps {state['partial']['steps']} disagree")
    sha = state.get("model_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise ValueError(f"{path}: the training state's model_sha256 is {sha!r}")
    return state


def _read_meta(path, f) -> dict:
    meta = f.metadata() or {}
    if meta.get("format") != CHECKPOINT_TAG:
        raise ValueError(f"{path}: not a training checkpoint (format {meta.get('format')!r}, want {CHECKPOINT_TAG})")
    return meta


def _state_of(path, meta: dict) -> dict:
    """The checked state, whose config must describe the model the metadata does: a resume builds the
    data and the model from the config (an edited num_classes of 10**30 would be allocated before anything
    else looked at it)."""
    state = parse_state(path, meta.get("state"))
    config = state["config"]
    for key in ("variant", "input_size", "num_classes"):
        if key == "input_size" and config[key] is None:
            continue
        if str(config[key]) != meta.get(key):
            raise ValueError(f"{path}: the training state's {key} {config[key]!r} is not the checkpoint's "
                             f"{meta.get(key)!r}; the file was edited")
    return state


def checkpoint_state(path) -> dict:
    """The run state a checkpoint records (its metadata only; no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    _regular(Path(path))
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = _read_meta(path, f)
    except (SafetensorError, OSError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    return _state_of(path, meta)


def _spec_of(path, meta: dict) -> Spec:
    try:
        variant, input_size, num_classes = meta["variant"], int(meta["input_size"]), int(meta["num_classes"])
        recorded = json.loads(meta["spec"])
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: the checkpoint's variant, input_size, num_classes or spec is missing or "
                         f"malformed ({err})") from None
    try:
        spec = get_spec(variant, input_size=input_size, num_classes=num_classes)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: {err.args[0] if err.args else err}") from None
    if recorded != json.loads(spec.to_json()):
        raise ValueError(f"{path}: recorded under another definition of {spec.variant}; it cannot be resumed here")
    return spec


def load_checkpoint(path) -> tuple[Spec, dict, dict, dict]:
    """(spec, weights, velocity, state) of a checkpoint save_checkpoint wrote."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _regular(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = _read_meta(path, f)
            state = _state_of(path, meta)
            spec = _spec_of(path, meta)
            expected = set(spec.weight_shapes()) | {VELOCITY + n for n in spec.weight_shapes()}
            extra = sorted(set(f.keys()) - expected)
            if extra:
                raise ValueError(f"{path}: unexpected tensor {extra[0]!r} for {spec.describe()}")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    for name, t in tensors.items():
        if t.dtype != np.float32:
            raise ValueError(f"{path}: tensor {name!r} is {t.dtype}, a training checkpoint holds float32")
    weights = {n: t for n, t in tensors.items() if not n.startswith(VELOCITY)}
    velocity = {n[len(VELOCITY):]: t for n, t in tensors.items() if n.startswith(VELOCITY)}
    spec.check_weights(weights, str(path))
    spec.check_weights(velocity, f"{path} (velocity)")
    return spec, weights, velocity, state


# --- the output folder ---------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is done (then act as they would have): the renames that
    commit a save are not split by Ctrl-C or a polite kill. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old is not None:  # None: a handler Python did not install; leave it alone
            held[sig] = old
            signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, old in held.items():
            signal.signal(sig, old)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def hold_output(out: Path):
    """Creates `out` if needed, holds an exclusive flock on it for the block (a second run into the same
    folder gets a clear error while this one lives; the kernel drops the lock when the process ends, however
    it ends) and clears what a killed run left in its staging folder. Yields the staging folder."""
    import fcntl

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        raise OutputError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out} is in use by another alexnet train run; wait for it to end or choose "
                             f"another --out") from None
        staging = out / STAGING
        try:
            if staging.is_symlink() or staging.is_file():
                staging.unlink()
            elif staging.exists():
                shutil.rmtree(staging)  # a killed run's (we hold the lock: no live one writes there)
            staging.mkdir()
        except OSError as err:
            raise OutputError(f"--out {out}: cannot write there ({err.strerror})") from None
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)


def commit(out: Path, staging: Path, spec: Spec, weights: dict, velocity: dict, state: dict,
           history: list[dict], config: dict, title: str) -> None:
    """Writes the model file, the metrics and the checkpoint (recording the model file's SHA-256) into
    `staging`, then renames them into `out`, the checkpoint first; an error leaves the old files as they were
    and is an OutputError naming the file."""
    from safetensors import SafetensorError

    from alexnet_parity import weights_convert
    from alexnet_parity.weights_convert._common import WriteError

    names = []
    try:
        try:
            weights_convert.save(str(staging / MODEL), spec, weights, fmt="canonical")
        except (OSError, SafetensorError, WriteError) as err:  # named as the file it becomes, not its staging copy
            raise _write_error(out / MODEL, err) from None
        state = {**state, "model_sha256": _sha256(staging / MODEL)}
        if history:
            names += write_metrics(staging, history, config)
            if plot_metrics(staging / METRICS_PNG, history, title):
                names.append(METRICS_PNG)
        try:
            save_checkpoint(staging / CHECKPOINT, spec, weights, velocity, state)
        except (OSError, SafetensorError) as err:
            raise _write_error(out / CHECKPOINT, err) from None
        mode = 0o666 & ~_umask()  # safetensors creates its files 0600; these are the user's, as any other
        for name in [CHECKPOINT, MODEL] + names:
            os.chmod(staging / name, mode)
        with _signals_held():
            for name in [CHECKPOINT, MODEL] + names:
                try:
                    os.replace(staging / name, out / name)
                except OSError as err:
                    raise _write_error(out / name, err) from None
    finally:
        for leftover in staging.iterdir():  # what an error left half-written
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def model_matches(out: Path, state: dict) -> bool:
    """Is out/model.safetensors the file the checkpoint's state was committed with?"""
    path = out / MODEL
    try:
        return state.get("model_sha256") is not None and path.is_file() and _sha256(path) == state["model_sha256"]
    except OSError:
        return False


# --- metrics -------------------------------------------------------------------------------------------

def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None  # JSON has no NaN


def write_metrics(out: Path, history: list[dict], config: dict) -> list[str]:
    """metrics.csv and metrics.json in `out` (train() gives the staging folder); returns their names."""
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k) for k in COLUMNS} for row in history)
    doc = {"config": config, "epochs": [{k: _finite(row.get(k)) for k in COLUMNS} for row in history]}
    for name, body in ((METRICS_CSV, text.getvalue()), (METRICS_JSON, json.dumps(doc, indent=1) + "\n")):
        try:
            (out / name).write_text(body)
        except OSError as err:
            raise _write_error(out / name, err) from None
    return [METRICS_CSV, METRICS_JSON]


def plot_metrics(path: Path, history: list[dict], title: str) -> bool:
    """Loss and top-1 per epoch, train and validation, lr drops marked. False when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "top1", "top-1 accuracy")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], "o-", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], "s-", label="validation")
        for prev, row in zip(history, history[1:]):
            if row["lr"] < prev["lr"]:
                ax.axvline(row["epoch"] - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(-0.02, 1.02)
    fig.suptitle(title + "   (dotted: lr / 10)")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as err:
        raise _write_error(path, err) from None
    finally:
        plt.close(fig)
    return True


# --- progress ------------------------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """`label [#####.....] step/total  loss 1.2345  812 img/s  ETA 0:15` on stderr: redrawn in place on a
    terminal, else a line at most every `every` seconds and at the end."""

    def __init__(self, label: str, total: int, stream=None, every: float = 10.0, width: int = 24):
        self.label, self.total, self.width, self.every = label, max(total, 1), width, every
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = -math.inf

    def update(self, done: int, elapsed: float, images: int, loss: float | None = None) -> None:
        now = time.monotonic()
        final = done >= self.total
        if not (self.tty or final or now - self.last >= self.every):
            return
        self.last = now
        filled = self.width * done // self.total
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - done) if done else 0.0
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}"
                + (f"  loss {loss:.4f}" if loss is not None else "")
                + f"  {rate:.0f} img/s  " + (f"{_clock(elapsed)}" if final else f"ETA {_clock(eta)}"))
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


def prefetch(make_item, indices, depth: int = 2):
    """make_item(i) for i in indices, computed `depth` ahead in a background thread (decoding and
    augmentation overlap the training step: Pillow and numpy release the GIL)."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def work():
        try:
            for i in indices:
                if stop.is_set():
                    return
                items.put((make_item(i), None))
        except BaseException as err:  # handed to the consumer, raised there
            items.put((None, err))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for _ in indices:
            item, err = items.get()
            if err is not None:
                raise err
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.01)


# --- evaluation ----------------------------------------------------------------------------------------

def topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per image: is the label among the k highest scores."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def evaluate(logits_fn, source: Source, spec: Spec, batch: int, *, ten_crop: bool = False, label: str = "eval",
             stream=None, threads: int = 2, mean_image=None) -> dict:
    """Mean cross-entropy, top-1 and top-5 of `logits_fn` (float32 NCHW batch -> logits) on `source`:
    centre crops, or the paper's ten views per image with their softmax averaged. Every call of logits_fn
    gets exactly `batch` rows (the last chunk padded), so a compiled function never sees a new shape.
    mean_image: subtracted instead of the per-channel mean (Batches)."""
    # ten views per image: about `batch` views per Batches item, not ten times as many in memory at once
    batches = Batches(source, spec, max(1, batch // 10) if ten_crop else batch, train=False, ten_crop=ten_crop,
                      threads=threads, mean_image=mean_image)
    progress = Progress(label, len(batches), stream)
    loss = top1 = top5 = seen = 0
    start = time.monotonic()
    for i, (x, y) in enumerate(prefetch(batches.__getitem__, range(len(batches))), 1):
        views = x.reshape(-1, *x.shape[-3:])
        chunks = []
        for lo in range(0, len(views), batch):
            chunk = views[lo:lo + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            chunks.append(np.asarray(logits_fn(padded))[:len(chunk)])
        z = np.concatenate(chunks).astype(np.float64)
        if ten_crop:
            probs = average_softmax(z.reshape(len(y), -1, z.shape[-1]))
            loss += -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300)).sum()
        else:
            z -= z.max(axis=1, keepdims=True)
            log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            probs = np.exp(log_probs)
            loss += -log_probs[np.arange(len(y)), y].sum()
        top1 += topk_hits(probs, y, 1).sum()
        top5 += topk_hits(probs, y, 5).sum()
        seen += len(y)
        progress.update(i, time.monotonic() - start, seen)
    return {"loss": loss / seen, "top1": top1 / seen, "top5": top5 / seen, "hits1": int(top1), "hits5": int(top5),
            "count": seen}


# --- training ------------------------------------------------------------------------------------------

def _train_sample(train: Source, n: int) -> Source:
    """n training images spread evenly over the set: the eval-mode train top-1 is measured on them."""
    n = min(n, len(train))
    return Subset(train, np.unique(np.linspace(0, len(train) - 1, n).round().astype(np.int64)))


def _check_resume(config: RunConfig, recorded: dict, path: Path) -> None:
    for key in FIXED:
        if key in recorded and recorded[key] != getattr(config, key):
            option = "--" + key.replace("_", "-")
            raise ValueError(f"{option} {getattr(config, key)} differs from the checkpoint's {recorded[key]} "
                             f"({path}); leave it out or start a new --out")


def train(config: RunConfig, train_source: Source, val_source: Source, out, *, resume: bool = False,
          max_steps: int | None = None, lr: float | None = None, stream=None, threads: int = 2,
          on_step=None) -> list[dict]:
    """Train, evaluate on val_source after every epoch, checkpoint, write the metrics; returns the
    history (one dict per epoch, COLUMNS). resume: continue from out/checkpoint.safetensors (same
    settings; `lr` there sets a new current rate). max_steps: stop after that many steps in all
    (checkpointing where it stops). Progress goes to `stream` (stderr); on_step(epoch, step, loss) is
    called after every step (epoch and step counted from 0)."""
    from .frameworks import default_framework

    if not config.framework:
        config = dataclasses.replace(config, framework=default_framework())
    stream = sys.stderr if stream is None else stream
    out = Path(out)
    if len(train_source) < config.batch:
        raise ValueError(f"--batch {config.batch} is larger than the {len(train_source)} training images")
    if len(val_source) == 0:
        raise ValueError("no validation images: raise --val-fraction")
    with hold_output(out) as staging:
        return _train(config, train_source, val_source, out, staging, resume=resume, max_steps=max_steps, lr=lr,
                      stream=stream, threads=threads, on_step=on_step)


def _train(config: RunConfig, train_source: Source, val_source: Source, out: Path, staging: Path, *, resume, max_steps,
           lr, stream, threads, on_step) -> list[dict]:
    from .frameworks import make_adapter

    ckpt = out / CHECKPOINT
    spec = config.spec()
    steps_per_epoch = len(train_source) // config.batch  # Batches(..., drop_last=True)
    schedule = PlateauSchedule(lr=config.lr, patience=config.patience)
    epoch = step = global_step = 0
    partial = {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}
    history: list[dict] = []
    run_config = dataclasses.asdict(config)
    title = f"{config.variant} in {config.framework}, {spec.input_size}px, {config.num_classes} classes"
    if resume:
        if not os.path.lexists(ckpt):
            raise FileNotFoundError(f"--resume: no checkpoint {ckpt}")
        ckpt_spec, weights, velocity, state = load_checkpoint(ckpt)
        _check_resume(config, state["config"], ckpt)
        if ckpt_spec != spec:
            raise ValueError(f"{ckpt} holds {ckpt_spec.describe()}, not {spec.describe()}")
        if state["step"] > steps_per_epoch:
            raise ValueError(f"{ckpt}: the training state's step {state['step']} is past the end of an epoch "
                             f"({steps_per_epoch} steps of {config.batch}); the file was edited")
        if not model_matches(out, state):  # a run killed between the checkpoint's rename and the model's
            stream.write(f"{out / MODEL} is not the checkpoint's; writing it again from {ckpt}\n")
            commit(out, staging, spec, weights, velocity, {k: v for k, v in state.items() if k != "model_sha256"},
                   state["history"], state["config"], title)
        schedule.load_state_dict(state["schedule"])
        epoch, step, global_step = state["epoch"], state["step"], state["global_step"]
        partial, history = state["partial"], state["history"]
        if lr is not None:
            schedule.lr = lr
    else:
        if ckpt.exists():
            raise ValueError(f"--out {out} already holds a checkpoint; pass --resume to continue it, or another --out")
        weights, velocity = init_weights(spec, seed=config.seed), None
    stream.write(f"training {spec.describe()} in {config.framework}: {len(train_source)} training images, "
                 f"{len(val_source)} validation, batch {config.batch}, epochs {epoch + 1}..{config.epochs} -> {out}\n")

    model = make_adapter(config.framework, spec, weights, lr=schedule.lr, cfg=PaperSGD(lr=config.lr))
    if velocity is not None:
        model.load_velocity(velocity)
    del weights, velocity
    train_eval = _train_sample(train_source, max(len(val_source), config.batch))

    def save(epoch_: int, step_: int) -> None:
        state = {"epoch": epoch_, "step": step_, "global_step": global_step, "schedule": schedule.state_dict(),
                 "partial": partial, "history": history, "config": run_config}
        commit(out, staging, spec, model.weights(), model.velocity(), state, history, run_config, title)

    while epoch < config.epochs:
        batches = Batches(train_source, spec, config.batch, train=True, seed=config.seed, epoch=epoch,
                          drop_last=True, threads=threads)
        progress = Progress(f"epoch {epoch + 1}/{config.epochs}", len(batches), stream)
        start = time.monotonic() - partial["seconds"]
        stopped = False
        for x, y in prefetch(batches.__getitem__, range(step, len(batches))):
            if max_steps is not None and global_step >= max_steps:
                stopped = True
                break
            loss = model.train_step(x, y, dropout_seed(config.seed, epoch, step))
            if not math.isfinite(loss):
                raise ValueError(f"training diverged: loss {loss} at epoch {epoch + 1}, step {step + 1}; "
                                 f"try a lower --lr (now {schedule.lr:g})")
            if on_step is not None:
                on_step(epoch, step, loss)
            step += 1
            global_step += 1
            partial.update(loss_sum=partial["loss_sum"] + loss, steps=partial["steps"] + 1,
                           images=partial["images"] + len(y), seconds=time.monotonic() - start)
            progress.update(step, partial["seconds"], partial["images"], partial["loss_sum"] / partial["steps"])
        if stopped:
            save(epoch, step)
            stream.write(f"stopped after {global_step} steps (epoch {epoch + 1}, step {step}); "
                         f"--resume continues from {ckpt}\n")
            break
        val = evaluate(model.logits, val_source, spec, config.batch, label="  validation", stream=stream,
                       threads=threads)
        tr = evaluate(model.logits, train_eval, spec, config.batch, label="  train top-1", stream=stream,
                      threads=threads)
        seconds = max(partial["seconds"], 1e-9)
        history.append({"epoch": epoch + 1, "train_loss": partial["loss_sum"] / max(partial["steps"], 1),
                        "train_top1": tr["top1"], "val_loss": val["loss"], "val_top1": val["top1"],
                        "val_top5": val["top5"], "lr": schedule.lr,
                        "img_per_s": partial["images"] / seconds, "seconds": partial["seconds"]})
        model.set_lr(schedule.step(1.0 - val["top1"]))  # the paper's rule: on the validation error
        epoch, step = epoch + 1, 0
        partial = {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}
        row = history[-1]
        stream.write(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.3f}  "
                     f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.3f}  lr {row['lr']:g}  "
                     f"{row['img_per_s']:.1f} img/s\n")
        save(epoch, 0)
        stream.flush()
        if max_steps is not None and global_step >= max_steps:
            break
    return history
