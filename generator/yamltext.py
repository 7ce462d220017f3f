"""Strings as YAML double-quoted scalars that every YAML parser reads back unchanged."""

from __future__ import annotations

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
# YAML 1.1 parsers (Helm's among them) treat these as line breaks, even inside quotes.
_LINE_BREAKS = {"\x85", "\u2028", "\u2029"}


def _printable(ch: str) -> bool:
    code = ord(ch)
    if ch in _LINE_BREAKS or ch == "\ufeff":
        return False
    return (0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if _printable(ch):
        return ch
    code = ord(ch)
    # \U for astral code points: Go's YAML parser rejects JSON-style surrogate pairs.
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def yaml_string(text: str) -> str:
    """``text`` as a double-quoted YAML scalar: quotes, backslashes, control characters and
    line separators escaped; every other character kept as it is."""
    return '"' + "".join(_escape(ch) for ch in text) + '"'
