"""Templates written by users (canned replies, automation, bot answers) render in a sandbox.

Jinja's sandbox keeps a template from reaching anything unsafe, but not from costing the
process a great deal: a workspace admin's template runs in the shared worker, so it must
not take it down for every workspace. A template here is held to:

- **time**: it renders in at most ``MAX_SECONDS`` (a loop that runs on without writing
  anything is stopped too);
- **size**: no text, list or integer it builds grows past ``MAX_OUTPUT`` characters (or
  ``MAX_INT_BITS``), checked *before* the operation that would build it: repetition
  (``*``), ``+``, ``~``, ``%`` formatting, widths (``center``, ``ljust``, ``format``
  specs, ``indent``), ``replace`` and ``join``;
- **output**: it is streamed and cut at ``MAX_OUTPUT``;
- **errors**: anything that goes wrong while rendering is a template error.
"""

import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rapport.problems import Invalid

MAX_OUTPUT = 100_000
# About 3,000 digits: more than any reply needs, and cheap to multiply. Squaring a
# namespace variable in a loop would otherwise grow an integer to gigabytes.
MAX_INT_BITS = 10_000
MAX_SECONDS = 2.0
# All the text one rendering may build, in characters: a loop or a ``map`` can build many
# pieces, each within MAX_OUTPUT.
MAX_BUILT = 10 * MAX_OUTPUT

_TOO_LONG = f"a text or list longer than {MAX_OUTPUT} is not allowed"
_TOO_BIG = f"an integer beyond {MAX_INT_BITS} bits is not allowed"
# A printf-style conversion: its width and precision are what can make it huge.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _size(value: Any) -> int:
    """How much ``value`` would be as text, about (what repetition and joining multiply)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) + sum(_size(v) for v in value)
    return 1


_rendering = threading.local()


def _refuse_if_long(size: int) -> None:
    """Count ``size`` characters about to be built against this rendering's allowance."""
    if size > MAX_OUTPUT:
        raise SecurityError(_TOO_LONG)
    spent = getattr(_rendering, "built", 0) + size
    if spent > MAX_BUILT:
        raise SecurityError(f"a template may build at most {MAX_BUILT} characters in all")
    _rendering.built = spent


def _check_product(left: Any, right: Any) -> None:
    for items, times in ((left, right), (right, left)):
        if isinstance(items, str | list | tuple) and isinstance(times, int):
            _refuse_if_long(_size(items) * times)
            return
    if isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise SecurityError(_TOO_BIG)


def _check_power(base: Any, exponent: Any) -> None:
    # Floats overflow into an error by themselves; integers grow without limit.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base).bit_length() * exponent > MAX_INT_BITS:
            raise SecurityError(_TOO_BIG)


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _refuse_if_long(_size(left) + _size(right))


def _check_width(width: Any) -> None:
    if isinstance(width, int) and width > 0:
        _refuse_if_long(width)


def _check_printf(fmt: Any) -> None:
    """``fmt % values``: a width or precision that would pad to gigabytes is refused."""
    if not isinstance(fmt, str):
        return
    for match in _PRINTF.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise SecurityError("a width taken from the values (*) is not allowed")
            if number is not None:
                _check_width(int(number))


def _check_format_string(fmt: str) -> None:
    """``fmt.format(...)``: the same for its format specs."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise SecurityError("a format spec taken from the values is not allowed")
        for number in re.findall(r"\d+", spec or ""):
            _check_width(int(number))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _refuse_if_long(len(text) + hits * (len(new) - len(old)))


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(separator, str) and isinstance(items, list | tuple):
        _refuse_if_long(len(separator) * max(len(items) - 1, 0) + _size(items) - len(items))


def _bounded_list(items: Any) -> list[Any]:
    """``items`` (a generator, say) as a list, refused once it holds too much."""
    out: list[Any] = []
    size = 0
    for item in items:
        out.append(item)
        size += _size(item)
        if len(out) > MAX_OUTPUT or size > MAX_OUTPUT:
            raise SecurityError(_TOO_LONG)
    return out


def _checked_text_call(
    text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """The arguments of ``text.name(...)``, once checked (a generator given to ``join``
    is read into a list first, within bounds)."""
    if name in ("format", "format_map"):
        _check_format_string(text)
    elif name == "replace":
        _check_replace(text, *args[:3])
    elif name == "join" and args:
        args = (_bounded_list(args[0]), *args[1:])
        _check_join(text, args[0])
    elif name in ("ljust", "rjust", "center", "zfill", "expandtabs"):  # a width
        for value in (*args, *kwargs.values()):
            _check_width(value)
    return args


def _guarded(check: Callable[..., None], jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    """``jinja_filter``, called once ``check`` has seen its arguments (not the eval context
    or environment Jinja passes some filters first)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        check(*(a for a in args if not hasattr(a, "autoescape")), **kwargs)
        return jinja_filter(*args, **kwargs)

    if hasattr(jinja_filter, "jinja_pass_arg"):  # what Jinja passes first, kept
        run.jinja_pass_arg = jinja_filter.jinja_pass_arg  # type: ignore[attr-defined]
    return run


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = _bounded_list(value)
    _check_join(d, items)
    return FILTERS["join"](eval_ctx, items, d, attribute)  # type: ignore[no-any-return]


_join.jinja_pass_arg = FILTERS["join"].jinja_pass_arg  # type: ignore[attr-defined]


def _indent_check(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    lines = str(text).count("\n") + 1
    per_line = len(width) if isinstance(width, str) else width
    if isinstance(per_line, int):
        _refuse_if_long(len(str(text)) + lines * per_line)


class _Compiler(CodeGenerator):
    """Jinja's code generator, with ``~`` checked like ``+``."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, refusing what would build something huge (see the module's doc).

    ``{{ 'a' * 10**8 }}`` would allocate 100 MB before the output is cut to MAX_OUTPUT.
    Jinja folds constant expressions when it compiles a template, but never an
    intercepted operator, so a constant like that one meets the check too.
    """

    code_generator_class = _Compiler
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = dict(FILTERS)
        for name, check in (
            ("center", lambda _value, width=80: _check_width(width)),
            ("indent", _indent_check),
            ("format", lambda value, *_, **__: _check_printf(value)),
            ("replace", _check_replace),
        ):
            self.filters[name] = _guarded(check, FILTERS[name])
        self.filters["join"] = _join

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%":
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            args = _checked_text_call(owner, getattr(method, "__name__", ""), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def joined(self, parts: Iterable[Any]) -> str:
        text = "".join(map(str, parts))
        _refuse_if_long(len(text))
        return text


# Immutable: a template can read what it is given and change nothing, call no unsafe
# attribute, and reach no module. Undefined names are errors, not silent blanks.
_env = _Sandbox(autoescape=False, undefined=StrictUndefined)


def check(source: str) -> None:
    """Refuse a template that does not parse, with the reason."""
    try:
        _env.parse(source)
    except Exception as exc:  # a syntax error, or RecursionError on deep nesting
        raise _invalid(exc) from exc


def render(source: str, context: dict[str, Any]) -> str:
    """Render a user's template with only ``context`` in reach."""
    parts: list[str] = []
    size = 0
    try:
        template = _env.from_string(source)
        _rendering.built = 0
        with _deadline(time.monotonic() + MAX_SECONDS):
            # Streamed, so a loop's output stops at MAX_OUTPUT instead of being built whole.
            for part in template.generate(**context):
                parts.append(part)
                size += len(part)
                if size >= MAX_OUTPUT:
                    break
    except Exception as exc:
        # Jinja's own errors are not all: the sandbox lets Python's arithmetic and type
        # errors (1/0, 1 + 'a', an OverflowError from range()) through, as documented.
        raise _invalid(exc) from exc
    return "".join(parts)[:MAX_OUTPUT]


class _deadline:  # noqa: N801 (used as a context manager)
    """Stop the template's own code once ``at`` has passed.

    A trace function on this thread, called on each line the compiled template runs (its
    code objects are named ``<template>``; no other frame is traced), so a loop that writes
    nothing is stopped as surely as one that writes. Whatever tracer was set (a debugger,
    coverage) is put back after.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self.before: Any = None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > self.at:
            raise SecurityError(f"a template may take at most {MAX_SECONDS:g} s to render")
        return self._line

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self._line if frame.f_code.co_filename == "<template>" else None

    def __enter__(self) -> None:
        self.before = sys.gettrace()
        sys.settrace(self._call)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.before)


def _invalid(exc: Exception) -> Invalid:
    return Invalid(f"template error: {str(exc) or type(exc).__name__}")
