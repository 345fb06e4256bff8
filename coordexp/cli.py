"""The command lines beside `python -m coordexp.train` (aggregate, evaluate, reproduce): a bad argument is one line
naming it, exit status 2, as a bad config value is."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose error is one line, `coordexp.MODULE: error: MESSAGE` as the command's other errors,
    without the usage (`--help` has it)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog.split()[-1]}: error: {message}", file=sys.stderr)
        sys.exit(2)
