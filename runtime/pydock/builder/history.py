"""The ``created_by`` text of each step's history entry, as the classic builder writes it
(``/bin/sh -c #(nop)  ENV A=1``, ``COPY file:<hash> in /dest``, Go's ``%q``/``%v`` of lists)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\"}


def _go_char(ch: str, quote: str) -> str:
    if ch == quote:
        return "\\" + ch
    if ch in _GO_ESCAPES:
        return _GO_ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0x80 <= code < 0xA0:
        return f"\\u{code:04x}"
    return ch


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``."""
    return '"' + "".join(_go_char(ch, '"') for ch in text) + '"'


def go_quote_list(items: Sequence[str] | None) -> str:
    """Go's ``fmt.Sprintf("%q", []string{...})``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items or ()) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def _go_rune(value: int) -> str:
    if not 0 <= value <= 0x10FFFF:
        return "'\\ufffd'"
    return "'" + _go_char(chr(value), "'") + "'"


def healthcheck(check: Mapping[str, Any] | None) -> str:
    """Go's ``%q`` of a ``*container.HealthConfig`` (what the classic builder prints)."""
    if not check:
        return "%!q(<nil>)"
    durations = " ".join(go_quote(go_duration(int(check.get(k) or 0)))
                         for k in ("Interval", "Timeout", "StartPeriod"))
    return (f"&{{{go_quote_list(check.get('Test') or [])} {durations} "
            f"{_go_rune(int(check.get('Retries') or 0))}}}")


def nop(shell: Sequence[str], text: str) -> str:
    """A metadata-only step: ``/bin/sh -c #(nop)  TEXT`` (two spaces: two words joined)."""
    return " ".join([*shell, "#(nop) ", text])


def nop_word(shell: Sequence[str], text: str) -> str:
    """COPY, ADD and WORKDIR: ``/bin/sh -c #(nop) TEXT`` (one word, one space)."""
    return " ".join([*shell, f"#(nop) {text}"])


def pairs(cmd: str, items: Iterable[tuple[str, str]]) -> str:
    """ENV and LABEL: ``ENV k=v k2=v 2`` (values expanded, unquoted)."""
    return " ".join([cmd, *(f"{k}={v}" for k, v in items)])


def copy_text(cmd: str, chown: str | None, source_hash: str, dest: str) -> str:
    """``COPY --chown=u:gfile:<hash> in /dest `` (the classic builder puts no space after
    the chown flag, and one after the destination)."""
    flag = f"--chown={chown}" if chown else ""
    return f"{cmd} {flag}{source_hash} in {dest} "


def run_text(argv: Sequence[str], build_args: Mapping[str, str]) -> str:
    """A RUN step: its command, after ``|N K=V ...`` when build args are in effect."""
    if not build_args:
        return " ".join(argv)
    shown = sorted(f"{k}={v}" for k, v in build_args.items())
    return " ".join([f"|{len(shown)}", *shown, *argv])
