"""The ``edgerep`` command line: a thin dispatcher over ``edgerep.commands.<name>``.

Each command module defines ``HELP`` (one line), ``DESCRIPTION`` (the ``--help`` text),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``edgerep --help`` starts without importing torch.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import traceback

# name -> one-line help. Order is the order of the pipeline.
COMMANDS: dict[str, str] = {
    "deploy": "fold, verify, check, quantize, build, benchmark, evaluate and gate a checkpoint into a bundle",
    "fold": "fold a train-time checkpoint into plain convolutions and prove it exact",
    "check": "report which layers, channels and train-time branches are INT8-hostile, and what to do",
    "quantize": "calibrate once and write a QDQ INT8 ONNX file per target policy",
    "build": "build engines (onnxruntime, TensorRT) for a target profile from an ONNX file",
    "bench": "measure latency and throughput of a model or bundle on every engine",
    "gate": "fail CI (exit 1) when a report's accuracy or latency regresses",
    "debug": "find the layer where INT8 error jumps, its train-time block and branch, and the smallest float set",
    "diff": "show what changed between two reports: accuracy, latency beyond noise, INT8 verdicts, files, settings",
    "fleet": "build, benchmark and gate on the target devices themselves, through a Ray cluster",
    "doctor": "show versions, devices and CPU features that decide what runs fast here",
    "zoo": "list the architectures edgerep can build and load",
}

EPILOG = """exit codes: 0 ok, 1 gate failed, 2 bad input (one line names the file or field).
Add --debug before the command to see the full traceback of an error.

typical use:
  edgerep deploy checkpoint.pt                 # everything, into engines/out/<name>/
  edgerep gate engines/out/<name>/report.json --max-drop 0.5
  edgerep diff main-bundle/ engines/out/<name>/ --markdown diff.md
"""


#: errno values that are the machine's state, not an edgerep bug: one line naming the file, exit 2
_USER_OS_ERRORS = {
    errno.EACCES: "check the file's permissions", errno.EPERM: "check the file's permissions",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "free some space", errno.EDQUOT: "disk quota exceeded; free some space",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def _command_module(name: str):
    return importlib.import_module(f"edgerep.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only`` set, import just that command's module."""
    parser = argparse.ArgumentParser(
        prog="edgerep",
        description="Ship re-parameterizable CNNs to edge hardware: fold exactly, quantize safely, gate in CI.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"edgerep {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        mod = _command_module(name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=getattr(mod, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks instead of one-line errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _version() -> str:
    from edgerep import __version__

    return __version__


def _which_command(argv: list[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _which_command(argv)
    parser = build_parser(only=name)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("EDGEREP_DEBUG") == "1"
    code = _run_command(args, as_program, debug)
    if as_program:
        _forget_escaped_interrupt()
    return code


def _forget_escaped_interrupt() -> None:
    """CPython (3.8-3.13) remembers a KeyboardInterrupt that escaped any ``exec``/``eval`` of a *string*
    (namedtuple and dataclass factories, pybind11's ``py::exec``), even one we caught; run as
    ``python -m``, the interpreter then kills itself with SIGINT at exit (exit -2, not our 130 or 0).
    Evaluating a string resets that flag (``run_eval_code_obj`` clears it before it runs)."""
    exec("None")  # noqa: S102 - a constant string: resets the flag, runs nothing


def _run_command(args: argparse.Namespace, as_program: bool, debug: bool) -> int:
    """Run the parsed command under signal handling; its exit code (130 / 143 after a signal)."""
    from edgerep.interrupts import Terminated, signals_as_exceptions

    seen: dict = {}
    try:
        # SIGTERM unwinds like Ctrl-C: locks and temporary folders go. Run as the program (argv None),
        # signals are ignored once the command's block ends, so nothing ends the process before its exit
        # code; called as a function, the caller's own handlers come back.
        with signals_as_exceptions(ignore_after=as_program) as seen:
            return int(args._run(args) or 0)
    except Exception as exc:  # raised after a signal: native code (torch.save's writer) turns the
        if seen.get("signal") is None:  # interrupt into its own error; it is still the interrupt
            return _failed(args, exc, debug)
        if debug:
            traceback.print_exc()
        return _interrupted(args.command, seen["signal"])
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        return _interrupted(args.command, signal.SIGINT)
    except Terminated:  # SIGTERM: every temporary directory and lock is already gone
        if debug:
            traceback.print_exc()
        return _interrupted(args.command, signal.SIGTERM)


def _interrupted(command: str, signum: int) -> int:
    """The one line and exit code of a command a signal ended (its clean-up already ran): 130 / 143."""
    if signum == signal.SIGINT:
        print(f"edgerep {command}: interrupted; nothing partial was left at the output path", file=sys.stderr)
        return 130
    print(f"edgerep {command}: terminated (SIGTERM); nothing partial was left at the output path", file=sys.stderr)
    return 143


def _failed(args: argparse.Namespace, exc: Exception, debug: bool) -> int:
    """The one line and exit code of a command that raised: 2 for bad input, 3 for an internal error."""
    from edgerep.errors import EdgerepError

    try:
        raise exc
    except EdgerepError as exc:
        if debug:
            traceback.print_exc()
        print(f"edgerep {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `edgerep ... | head` closed the pipe: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        if exc.errno not in _USER_OS_ERRORS:
            return _internal(args.command, exc, debug)
        if debug:
            traceback.print_exc()
        where = exc.filename or "output"
        print(f"edgerep {args.command}: error: {where}: {exc.strerror or exc} "
              f"({_USER_OS_ERRORS[exc.errno]})", file=sys.stderr)
        return 2
    except Exception as exc:  # an edgerep bug, or an input we did not foresee: still one line
        return _internal(args.command, exc, debug)


def _internal(command: str, exc: BaseException, debug: bool) -> int:
    """An edgerep bug, or an input we did not foresee: one line (or the traceback with --debug), exit 3."""
    if debug:
        traceback.print_exc()
    else:
        print(f"edgerep {command}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
