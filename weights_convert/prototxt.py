"""A tiny reader of protobuf text format, enough for Caffe's .prototxt files.

    name: "AlexNet"
    layer { name: "conv1" type: "Convolution" convolution_param { num_output: 96 kernel_size: 11 } }

parses to [("name", "AlexNet"), ("layer", [("name", "conv1"), ("type", "Convolution"),
("convolution_param", [("num_output", 96), ("kernel_size", 11)])])]: a message is a list of (field, value)
pairs in file order (fields repeat), a value is a str (quoted string, or an enum/bool identifier), an int,
a float, or a nested message. `#` starts a comment. Errors are ValueErrors naming the line.
"""
from __future__ import annotations

import re

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][-+]?\d++)?+[fF]?+(?![\w.]))
  | (?P<ident>[A-Za-z_][\w.]*)
  | (?P<punct>[:{}<>\[\],;])
""", re.VERBOSE)

# Possessive quantifiers (++, *+, ?+): a digit run is matched once and never given back, so a 30,000-digit
# token that is no number fails in linear time (the old \d+\.?\d* split the run every way: quadratic).
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}
MAX_DEPTH = 32


def _tokens(text: str, source: str):
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"{source}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind != "space":
            yield kind, m.group(), line
        line += m.group().count("\n")
        pos = m.end()


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _number(token: str):
    token = token.rstrip("fF")
    try:
        return int(token)
    except ValueError:
        return float(token)


def parse(text: str, source: str = "prototxt") -> list:
    tokens = list(_tokens(text, source))
    pos = 0

    def error(msg):
        line = tokens[pos][2] if pos < len(tokens) else (tokens[-1][2] if tokens else 1)
        return ValueError(f"{source}:{line}: {msg}")

    def message(close, depth):
        nonlocal pos
        if depth > MAX_DEPTH:
            raise error("messages nested too deeply")
        fields = []
        while True:
            if pos >= len(tokens):
                if close is None:
                    return fields
                raise error(f"missing {close!r} at end of file")
            kind, tok, _ = tokens[pos]
            if kind == "punct" and tok == close:
                pos += 1
                return fields
            if kind == "punct" and tok in ",;":
                pos += 1
                continue
            if kind != "ident":
                raise error(f"expected a field name, got {tok!r}")
            name = tok
            pos += 1
            if pos < len(tokens) and tokens[pos][1] == ":":
                pos += 1
            if pos >= len(tokens):
                raise error(f"field {name!r} has no value")
            kind, tok, _ = tokens[pos]
            if tok in ("{", "<"):
                pos += 1
                fields.append((name, message("}" if tok == "{" else ">", depth + 1)))
            elif tok == "[":  # repeated scalars as a list: dim: [1, 3, 227, 227]
                pos += 1
                while pos < len(tokens) and tokens[pos][1] != "]":
                    if tokens[pos][1] != ",":
                        fields.append((name, scalar()))
                    else:
                        pos += 1
                if pos >= len(tokens):
                    raise error("missing ']'")
                pos += 1
            else:
                fields.append((name, scalar()))

    def scalar():
        nonlocal pos
        kind, tok, _ = tokens[pos]
        pos += 1
        if kind == "string":
            value = _unquote(tok)
            while pos < len(tokens) and tokens[pos][0] == "string":  # adjacent strings concatenate
                value += _unquote(tokens[pos][1])
                pos += 1
            return value
        if kind == "number":
            return _number(tok)
        if kind == "ident":
            return tok
        pos -= 1
        raise error(f"expected a value, got {tok!r}")

    return message(None, 0)


def get(fields: list, name: str, default=None):
    """The last value of a field (proto's rule for optional fields), or default."""
    for key, value in reversed(fields):
        if key == name:
            return value
    return default


def get_all(fields: list, name: str) -> list:
    return [value for key, value in fields if key == name]
