"""Synthetic vulnerable / safe C functions: a dataset a tiny transformer can learn in seconds.

Real Devign is hard (about 0.62-0.64 accuracy for small models), so a training loop that works
and one that is subtly broken look alike on it. On this data a working loop must clearly beat
chance: every vulnerable function carries one classic flaw and every safe one is its corrected
twin (vulnerable / safe below), inside varied identifiers, buffer sizes and surrounding statements.

- unchecked copy: `strcpy(buf, s)`, `memcpy(d, s, n)` / `snprintf(buf, sizeof(buf), "%s", s)`,
  `strncpy` with a terminator, or a length check before the copy;
- malloc without a NULL check / `if (p == NULL) return -ENOMEM;` before the first write;
- off-by-one bounds: `i <= LEN` on an array of LEN / `i < LEN`;
- use after free: `free(p); n = p->len;` / read first, then free (and maybe `p = NULL`);
- format string: `printf(msg)` / `printf("%s", msg)` (also fprintf, syslog, snprintf).

Both classes draw the same filler and both carry unrelated guard statements, so length alone
predicts the label poorly (the unit tests check a best length threshold stays near chance).

    rows = synth_examples(2000, seed=0)
    write_jsonl(rows, "data/synth/train.jsonl")
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from streamguard.datasets import write_jsonl

__all__ = ["FLAWS", "synth_examples", "write_jsonl"]

_VERBS = ("parse", "decode", "read", "load", "handle", "process", "copy", "fill", "update",
          "build", "init", "scan", "apply", "emit", "store")
_NOUNS = ("header", "packet", "frame", "config", "entry", "token", "chunk", "record", "block",
          "name", "path", "option", "field", "slice", "table", "label", "segment", "payload")
_PREFIXES = ("", "", "av_", "qemu_", "net_", "img_", "vdev_", "ff_", "io_", "cfg_")
_BUFS = ("buf", "tmp", "name", "dst", "out", "line", "scratch", "local", "path", "tag")
_SRCS = ("src", "input", "str", "data", "arg", "text", "value", "in")
_PTRS = ("p", "ptr", "node", "item", "elem", "ent", "obj", "req", "pkt", "ctx2")
_LENS = ("len", "size", "n", "count", "nbytes", "length")
_IDXS = ("i", "j", "k", "idx", "pos")
_CTX = ("ctx", "s", "st", "dev", "opaque", "priv", "state")
_CTX_TYPES = ("Context", "DeviceState", "Parser", "CodecContext", "Stream", "Session")
_SIZES = (8, 16, 24, 32, 48, 64, 80, 128, 256, 512, 1024)
_ELEM_TYPES = ("int", "uint8_t", "uint32_t", "int16_t", "char", "uint16_t")
_MSG_FUNCS = ("printf({m})", "fprintf(stderr, {m})", "syslog(LOG_ERR, {m})",
              "snprintf({b}, sizeof({b}), {m})")
_SAFE_MSG_FUNCS = ('printf("%s", {m})', 'fprintf(stderr, "%s", {m})',
                   'syslog(LOG_ERR, "%s", {m})', 'snprintf({b}, sizeof({b}), "%s", {m})')


class _Gen:
    """Random choices for one function, with distinct identifiers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.ctx = self.pick(_CTX)
        self.ctx_type = rng.choice(_CTX_TYPES)

    def pick(self, pool: tuple[str, ...]) -> str:
        choices = [name for name in pool if name not in self.used] or list(pool)
        name = self.rng.choice(choices)
        self.used.add(name)
        return name

    def filler(self) -> str:
        """One harmless statement; both classes use the same pool."""
        c, r = self.ctx, self.rng
        options = [
            f"{c}->flags |= 0x{r.choice((1, 2, 4, 8, 16, 32)):x};",
            f"{c}->{r.choice(('count', 'nb_read', 'pos', 'seq'))}++;",
            f"{c}->state = {r.choice(('STATE_IDLE', 'STATE_BUSY', 'STATE_DONE'))};",
            f"if ({c}->{r.choice(('closed', 'error', 'eof'))})\n        return -1;",
            f"total += {r.randint(1, 64)};",
            f"trace_{r.choice(_VERBS)}({c}, {r.randint(0, 9)});",
            f"{c}->last = {r.choice(('jiffies', 'total', '0', '-1'))};",
            f"if ({c}->debug)\n        log_msg(\"{r.choice(_VERBS)} {r.choice(_NOUNS)}\");",
            f"assert({c} != NULL);",
            f"mask = (mask << {r.randint(1, 7)}) & 0x{r.choice((0xff, 0xffff, 0x7f)):x};",
        ]
        return r.choice(options)

    def fillers(self, low: int = 0, high: int = 4) -> list[str]:
        return [self.filler() for _ in range(self.rng.randint(low, high))]


def _copy(g: _Gen, vulnerable: bool) -> tuple[list[str], list[str]]:
    buf, src, size = g.pick(_BUFS), g.pick(_SRCS), g.rng.choice(_SIZES)
    if g.rng.random() < 0.5:  # string copy into a fixed buffer
        params = [f"const char *{src}"]
        body = [f"char {buf}[{size}];"]
        body += [f"strcpy({buf}, {src});"] if vulnerable else g.rng.choice([
            [f"snprintf({buf}, sizeof({buf}), \"%s\", {src});"],
            [f"strncpy({buf}, {src}, sizeof({buf}) - 1);", f"{buf}[sizeof({buf}) - 1] = '\\0';"],
            [f"if (strlen({src}) >= sizeof({buf}))\n        return -1;", f"strcpy({buf}, {src});"],
        ])
        body.append(f"{g.ctx}->{g.rng.choice(('id', 'key', 'hash'))} = hash_str({buf});")
        return params, body
    n, elem = g.pick(_LENS), g.rng.choice(("uint8_t", "char", "unsigned char"))
    params = [f"const {elem} *{src}", f"size_t {n}"]
    body = [f"{elem} {buf}[{size}];"]
    if not vulnerable:
        body += g.rng.choice([[f"if ({n} > sizeof({buf}))\n        return -EINVAL;"],
                              [f"if ({n} > {size})\n        {n} = {size};"]])
    body += [f"memcpy({buf}, {src}, {n});",
             f"{g.ctx}->crc = crc32({g.ctx}->crc, {buf}, {n});"]
    return params, body


def _malloc(g: _Gen, vulnerable: bool) -> tuple[list[str], list[str]]:
    p, n, elem = g.pick(_PTRS), g.pick(_LENS), g.rng.choice(_ELEM_TYPES)
    params = [f"size_t {n}"]
    alloc = g.rng.choice([f"malloc({n} * sizeof(*{p}))", f"calloc({n}, sizeof({elem}))",
                          f"av_malloc({n} * sizeof({elem}))"])
    body = [f"{elem} *{p} = {alloc};"]
    if not vulnerable:
        body.append(g.rng.choice([f"if ({p} == NULL)\n        return -ENOMEM;",
                                  f"if (!{p})\n        return -1;"]))
    body += [f"{p}[0] = {g.rng.randint(0, 255)};",
             f"{g.ctx}->{g.rng.choice(('table', 'buf', 'data', 'cache'))} = {p};"]
    return params, body


def _off_by_one(g: _Gen, vulnerable: bool) -> tuple[list[str], list[str]]:
    arr, i, size, elem = g.pick(_BUFS), g.pick(_IDXS), g.rng.choice(_SIZES), g.rng.choice(
        _ELEM_TYPES)
    op = "<=" if vulnerable else "<"
    if g.rng.random() < 0.5:
        macro = f"MAX_{g.rng.choice(_NOUNS).upper()}S"
        bound = g.rng.choice([str(size), macro])
        decl = f"{elem} {arr}[{bound}];"
        params = [f"{elem} fill"]
        body = [decl, f"int {i};", f"for ({i} = 0; {i} {op} {bound}; {i}++)",
                f"    {arr}[{i}] = fill;"]
    else:  # index check against a table length
        params = [f"int {i}", f"{elem} v"]
        body = [f"if ({i} < 0 || {i} {op} {g.ctx}->nb_{arr})\n        return -1;",
                f"{g.ctx}->{arr}[{i}] = v;"]
    return params, body


def _use_after_free(g: _Gen, vulnerable: bool) -> tuple[list[str], list[str]]:
    p, n = g.pick(_PTRS), g.pick(_LENS)
    field = g.rng.choice(("len", "size", "refcount", "flags", "id"))
    params = [f"struct {g.rng.choice(_NOUNS)} *{p}"]
    if vulnerable:
        body = [f"free({p});", f"int {n} = {p}->{field};"]
    else:
        body = g.rng.choice([[f"int {n} = {p}->{field};", f"free({p});"],
                             [f"int {n} = {p}->{field};", f"free({p});", f"{p} = NULL;"]])
    body += [f"{g.ctx}->{g.rng.choice(('last_len', 'total', 'seen'))} += {n};"]
    return params, body


def _format_string(g: _Gen, vulnerable: bool) -> tuple[list[str], list[str]]:
    msg, buf = g.pick(("msg", "user", "fmt_in", "text", "name", "reason")), g.pick(_BUFS)
    pattern = g.rng.randrange(len(_MSG_FUNCS))
    call = (_MSG_FUNCS if vulnerable else _SAFE_MSG_FUNCS)[pattern].format(m=msg, b=buf)
    body = [f"char {buf}[{g.rng.choice(_SIZES)}];"] if "{b}" in _MSG_FUNCS[pattern] else []
    body.append(f"{call};")
    return [f"const char *{msg}"], body


FLAWS: dict[str, Callable[[_Gen, bool], tuple[list[str], list[str]]]] = {
    "unchecked_copy": _copy, "malloc_null": _malloc, "off_by_one": _off_by_one,
    "use_after_free": _use_after_free, "format_string": _format_string,
}


def _function(rng: random.Random, flaw: str, vulnerable: bool) -> str:
    g = _Gen(rng)
    params, core = FLAWS[flaw](g, vulnerable)
    name = f"{rng.choice(_PREFIXES)}{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"
    static = "static " if rng.random() < 0.6 else ""
    # Extra filler for the vulnerable side offsets the lines a fix adds, so length is no signal.
    before = g.fillers(0, 3 + (1 if vulnerable else 0))
    after = g.fillers(0, 3)
    decls = [f"int total = {rng.randint(0, 4)};"]
    if any("mask" in stmt for stmt in before + after):
        decls.append("unsigned mask = 0;")
    body = decls + before + core + after + ["return total;"]
    sig = ", ".join([f"{g.ctx_type} *{g.ctx}"] + params)
    lines = [f"{static}int {name}({sig})", "{"] + [f"    {stmt}" for stmt in body] + ["}"]
    return "\n".join(lines) + "\n"


def synth_examples(n: int, *, seed: int = 0, vulnerable_fraction: float = 0.46,
                   id_prefix: str = "synth") -> list[dict[str, Any]]:
    """`n` rows `{id, project: "synth", target, func}`, exactly round(n * vulnerable_fraction)
    vulnerable, flaws spread evenly over both classes; the same seed gives the same rows.

    Raises:
        ValueError: `n` is negative or `vulnerable_fraction` is outside [0, 1].
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= vulnerable_fraction <= 1.0:
        raise ValueError(f"vulnerable_fraction must be between 0 and 1, got {vulnerable_fraction}")
    rng = random.Random(f"streamguard-synth:{seed}")
    n_vuln = round(n * vulnerable_fraction)
    labels = [1] * n_vuln + [0] * (n - n_vuln)
    rng.shuffle(labels)
    flaws = list(FLAWS)
    rows: list[dict[str, Any]] = []
    for i, target in enumerate(labels):
        flaw = flaws[rng.randrange(len(flaws))]
        rows.append({"id": f"{id_prefix}-{i}", "project": "synth", "target": target,
                     "func": _function(rng, flaw, bool(target))})
    return rows
