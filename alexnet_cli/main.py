"""`alexnet` entry point: argparse front door; subcommand modules are imported lazily by name."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from alexnet_parity.alexnet_cli._malloc import keep_large_buffers

# name -> (module under alexnet_cli, one-line help). Each module has add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "summary": ("summary_cmd", "per-layer table of a variant: kernels, padding, shapes, params, MACs"),
    "diff": ("diff_cmd", "every difference between two variants, with its consequence and source"),
    "convert": ("convert_cmd", "convert weights between checkpoint formats, bit-exact (the formats: convert --help)"),
    "parity": ("parity_cmd", "run every variant in every engine and compare each layer with the float64 reference"),
    "bench": ("bench_cmd", "throughput, compile time and memory of each framework"),
    "train": ("train_cmd", "train a variant with the paper's recipe in any engine that trains"),
    "eval": ("eval_cmd", "top-1/top-5 of a checkpoint, centre crop or the paper's 10 crops"),
    "predict": ("predict_cmd", "the top classes of one image"),
    "fetch": ("fetch_cmd", "download a public checkpoint (digest-checked, cached, resumable), optionally converted"),
}


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C: every writer's cleanup (the
    temporaries of atomic_output) runs, where the default action would end the process on the spot."""


def _terminate(signum, frame):
    raise Terminated()


def _handle_sigterm():
    """Install the SIGTERM handler where nobody else has one (main thread only); returns the handler it
    replaced, to put back when the command returns, or None when it installed nothing."""
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous not in (signal.SIG_DFL, None):
        return None
    signal.signal(signal.SIGTERM, _terminate)
    return signal.SIG_DFL if previous is None else previous


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="One AlexNet spec, built in PyTorch, Keras and Flax NNX, with converters and a parity suite.",
        epilog="Run 'alexnet COMMAND --help' for a command's options. The process keeps large freed buffers for "
               "reuse (faster steps, more resident memory); ALEXNET_MALLOC=system turns that off.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in sys.argv[1:2]:  # only the chosen command's module is imported
            importlib.import_module(f"alexnet_parity.alexnet_cli.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.argv[1:] = argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    keep_large_buffers()  # before any framework starts a thread
    previous = _handle_sigterm()
    module = importlib.import_module(f"alexnet_parity.alexnet_cli.{args._module}")
    try:
        return int(module.run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"alexnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"alexnet {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
