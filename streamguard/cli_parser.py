"""The `streamguard` argument parser: argparse with one-line errors that suggest what was meant.

    $ streamguard trian
    streamguard: error: unknown command 'trian'; did you mean 'train'?
    $ streamguard train --modle tiny
    streamguard train: error: unknown flag --modle; did you mean --model?

Every usage error is one line on stderr and exit code 2 (EXIT_INVALID). Python 3.14's argparse
has `suggest_on_error`; 3.11 does not, so the suggestions come from difflib here.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

#: The namespace attribute naming the innermost parser that left arguments unrecognized.
_OWNER = "_streamguard_unrecognized_by"


def did_you_mean(word: str, options: Sequence[str], quote: bool = True) -> str:
    """`; did you mean 'train'?` for the closest option, `` when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {close[0]}?"


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with a suggestion (subparsers inherit it)."""

    _seen_args: list[str]

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        self._seen_args = list(sys.argv[1:] if args is None else args)
        ns, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(ns, _OWNER):  # the innermost parser returns first
            setattr(ns, _OWNER, self)
        return ns, extras

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        owner = vars(ns).pop(_OWNER, self)
        if extras:
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """A value outside `choices`: name the closest choice instead of listing them all."""
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(c) for c in choices]
        if isinstance(action, argparse._SubParsersAction):
            hint = did_you_mean(str(value), names) or f" (commands: {', '.join(names)})"
            raise argparse.ArgumentError(None, f"unknown command {value!r}{hint}")
        flag = "/".join(action.option_strings) or action.dest
        hint = did_you_mean(str(value), names) or ""
        raise argparse.ArgumentError(
            None, f"{flag}: invalid choice: {value!r}{hint} (allowed: {', '.join(names)})")

    def unknown_flags(self) -> list[str]:
        """The `--flags` given to this parser that it does not know (nor abbreviates)."""
        known = list(self._option_string_actions)
        unknown = []
        for token in getattr(self, "_seen_args", []):
            if token == "--":
                break
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and not any(k.startswith(flag) for k in known):
                unknown.append(flag)
        return unknown

    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2. An unknown flag is named first: it is usually why a
        required flag looks missing (`--trian x` leaves --train unset)."""
        unknown = self.unknown_flags()
        if unknown:
            flags = [k for k in self._option_string_actions if k.startswith("--")]
            message = f"unknown flag {unknown[0]}{did_you_mean(unknown[0], flags, quote=False)}"
            if len(unknown) > 1:
                message += f" (also unknown: {', '.join(unknown[1:])})"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
