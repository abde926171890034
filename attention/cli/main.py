"""`yolov5-attention <command> [flags]`; `python -m attention <command>` and the top-level scripts land here too."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from attention.adapter import ENV_MODULES, import_user_modules
from attention.cli import compare, data, detect, tools, train, val
from attention.cli.errors import run

# command -> (help, add its flags, run it)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], object]]] = {
    "train": (train.HELP, train.add_arguments, train.run),
    "val": (val.HELP, val.add_arguments, val.run),
    "detect": (detect.HELP, detect.add_arguments, detect.run),
    "compare": (compare.HELP, compare.add_arguments, compare.run),
    "convert": (data.CONVERT_HELP, data.add_convert, data.convert),
    "tiling": (data.TILING_HELP, data.add_tiling, data.tiling),
    "sizes": (data.SIZES_HELP, data.add_sizes, data.sizes),
    "maps": (tools.MAPS_HELP, tools.add_maps, tools.maps),
    "export": (tools.EXPORT_HELP, tools.add_export, tools.export),
    "compat": (tools.COMPAT_HELP, tools.add_compat, tools.compat),
}


def parser(prog: str = "yolov5-attention") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="YOLOv5 attention variants for small objects, on ultralytics.")
    p.add_argument("--modules", help="your Python modules that register modules of their own, comma-separated "
                   "(imported from the working folder; also $ATTENTION_MODULES)")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name, (text, add, job) in COMMANDS.items():
        cmd = sub.add_parser(name, help=text, description=text)
        add(cmd)
        cmd.set_defaults(func=job, prog=f"{prog} {name}")
    return p


def main(argv: Sequence[str] | None = None, script: str | None = None) -> object:
    """Run a command; script (e.g. 'train.py') is how a top-level shim names itself in help and errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if script is not None:  # train.py --cfg ... is `train --cfg ...`, under its own name
        command = script.removesuffix(".py")
        sub = argparse.ArgumentParser(prog=script, description=COMMANDS[command][0])
        COMMANDS[command][1](sub)
        args = sub.parse_args(argv)
        args.func, args.prog = COMMANDS[command][2], script
    else:
        args = parser().parse_args(argv)
        if args.modules:  # through the environment, so that every process of the run imports them
            os.environ[ENV_MODULES] = ",".join(filter(None, [os.environ.get(ENV_MODULES), args.modules]))
            run(import_user_modules, f"{args.prog.split()[0]}", args.modules)
        del args.command, args.modules
    job, prog = args.func, args.prog
    del args.func, args.prog  # what is left are the command's own flags
    return run(job, prog, args)


def console() -> int:
    """The yolov5-attention console script (its return value is the exit status)."""
    main()
    return 0
