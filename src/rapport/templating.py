"""Templates written by users (canned replies, automation, bot answers) render in a sandbox.

Jinja's sandbox keeps a template from reaching anything unsafe, but not from costing the
process a great deal: a workspace admin's template runs in the shared worker, so it must
not take it down for every workspace. A template here is held to:

- **time**: it renders in at most ``MAX_SECONDS`` (a loop that runs on without writing
  anything is stopped too);
- **size**: no text, list or integer it builds grows past ``MAX_OUTPUT`` characters (or
  ``MAX_INT_BITS``), checked *before* the operation that would build it: repetition
  (``*``), ``+``, ``~``, ``%`` and ``format`` (how many fields, how large their values,
  their widths), widths (``center``, ``ljust``, ``indent``...), ``expandtabs``,
  ``replace``, ``translate``, ``join``, ``wordwrap``'s breaks, ``batch``'s fill,
  ``slice``'s count, and what a macro or a block (``{% set %}``, ``{% filter %}``,
  ``caller()``) wrote, which a loop can make of the same large piece many times. What
  one call can only make a few times larger (``tojson``, whose indent is refused above 8,
  ``escape``, ``upper``...) is
  checked once made, before the next call can make it larger again. A list, tuple or
  dict is checked once made too (a literal, a call's arguments, a call's or a filter's
  result): made of many references to one large text it costs little, but showing it
  builds every copy;
- **output**: it is streamed and cut at ``MAX_OUTPUT``;
- **errors**: anything that goes wrong while rendering is a template error.
"""

import re
import string
import sys
import threading
import time
from collections.abc import (
    Callable,
    Collection,
    ItemsView,
    Iterable,
    KeysView,
    Mapping,
    Set,
    ValuesView,
)
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace

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
# A printf-style conversion: the key of the value it shows, its width and its precision.
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _size(value: Any) -> int:
    """How much ``value`` would be as text, about (what repetition and joining multiply,
    and what a format field shows)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return abs(value).bit_length() // 3 + 1  # its digits, at least
    if isinstance(value, Namespace):  # shown as its attributes
        value = getattr(value, "_Namespace__attrs", {})
    if isinstance(value, Mapping):
        return len(value) + sum(_size(k) + _size(v) for k, v in value.items())
    if isinstance(value, list | tuple | Set | KeysView | ValuesView | ItemsView):
        items: Collection[Any] = value
        return len(items) + sum(_size(item) for item in items)
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


def _checked_result(value: Any) -> Any:
    """``value``, the text or list a call or a literal made, unless it is too long. A call
    that can only make its text a few times longer (``tojson``, ``escape``, ``upper``) is
    checked after it: what one call makes is bounded, but the next call would multiply it
    again."""
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT:
            raise SecurityError(_TOO_LONG)
    elif isinstance(value, list | tuple | Mapping | Namespace) and _size(value) > MAX_OUTPUT:
        raise SecurityError(_TOO_LONG)
    return value


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


def _printf_size(fmt: str, values: Any) -> int:
    """How long ``fmt % values`` can be: each conversion shows a value (the one its key
    names, one of a tuple's, or the one value), padded to its width and precision. A
    width taken from the values (``*``) is refused."""
    size = len(fmt)
    if isinstance(values, tuple):
        size += sum(_size(v) for v in values)  # each shown once at most
    for match in _PRINTF.finditer(fmt):
        size -= len(match.group())  # the conversion, not shown
        key, *numbers = match.groups()
        if key is not None and "(" in key:
            # Python reads "%((a))9s" as the key "(a)" and the width 9; the pattern stops
            # at the first ")", and the width went uncounted.
            raise SecurityError("a format key with parentheses is not allowed")
        for number in numbers:
            if number == "*":
                raise SecurityError("a width taken from the values (*) is not allowed")
            if number is not None:
                size += int(number)
        if key is not None and isinstance(values, Mapping):
            size += _size(values.get(key))
        elif not isinstance(values, tuple):
            size += _size(values)
    return size


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """How long ``fmt.format(*args, **kwargs)`` can be: each field shows the value it
    names, padded to the widths in its spec (which may not come from the values)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # str.format raises the same error itself
    formatter = SandboxedFormatter(_env)
    size, auto = 0, 0
    for literal, name, spec, _ in fields:
        size += len(literal)
        if spec and "{" in spec:
            raise SecurityError("a format spec taken from the values is not allowed")
        size += sum(int(number) for number in re.findall(r"\d+", spec or ""))
        if name is None:
            continue
        if name == "":
            name, auto = str(auto), auto + 1
        try:  # the value itself, as str.format finds it ({0.name}, {key[0]})
            size += _size(formatter.get_field(name, args, kwargs)[0])
        except Exception:  # noqa: S112 (str.format raises the same error itself)
            continue
    return size


def _replace_size(text: Any, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _join_size(separator: Any, items: Any) -> int:
    if not (isinstance(separator, str) and isinstance(items, list | tuple)):
        return 0
    return len(separator) * max(len(items) - 1, 0) + _size(items) - len(items)


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


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _translated_size(text: str, table: Any) -> int:
    values: Iterable[Any] = table.values() if isinstance(table, Mapping) else table
    if not isinstance(values, list | tuple | ValuesView):
        return len(text)  # a text table maps a character to one character
    longest = max((len(v) if isinstance(v, str) else 1 for v in values), default=1)
    return len(text) * longest


_TextSize = Callable[[str, tuple[Any, ...], dict[str, Any]], int]
# How long the text a method of a text makes can be, for those that can make it much
# longer than the text and their arguments: checked before the call.
_TEXT_SIZES: dict[str, _TextSize] = {
    **dict.fromkeys(
        ("center", "ljust", "rjust", "zfill"),
        lambda text, args, kwargs: max(len(text), _count(_arg(args, kwargs, 0, "width"))),
    ),
    "expandtabs": lambda text, args, kwargs: (
        len(text) + text.count("\t") * _count(_arg(args, kwargs, 0, "tabsize") or 8)
    ),
    "format": _format_size,
    "format_map": lambda text, args, _: _format_size(text, (), args[0] if args else {}),
    "join": lambda text, args, _: _join_size(text, args[0]) if args else 0,
    "replace": lambda text, args, _: _replace_size(text, *args[:3]),
    "translate": lambda text, args, kwargs: _translated_size(text, _arg(args, kwargs, 0, "table")),
}


def _checked_text_call(
    text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """The arguments of ``text.name(...)``, once checked (a generator given to ``join``
    is read into a list first, within bounds)."""
    if name == "join" and args:
        args = (_bounded_list(args[0]), *args[1:])
    size = _TEXT_SIZES.get(name)
    if size is not None:
        _refuse_if_long(size(text, args, kwargs))
    return args


def _checked_filter(
    jinja_filter: Callable[..., Any], check: Callable[..., None] | None = None
) -> Callable[..., Any]:
    """``jinja_filter``, called once ``check`` has seen its arguments (not the eval context
    or environment Jinja passes some filters first), its text checked once made."""
    passed = 1 if hasattr(jinja_filter, "jinja_pass_arg") else 0

    def run(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(*args[passed:], **kwargs)
        return _checked_result(jinja_filter(*args, **kwargs))

    if passed:  # what Jinja passes first, kept
        run.jinja_pass_arg = jinja_filter.jinja_pass_arg  # type: ignore[attr-defined]
    return run


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = _bounded_list(value)
    _refuse_if_long(_join_size(d, items))
    return FILTERS["join"](eval_ctx, items, d, attribute)  # type: ignore[no-any-return]


_join.jinja_pass_arg = FILTERS["join"].jinja_pass_arg  # type: ignore[attr-defined]


def _check_indent(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    lines = str(text).count("\n") + 1
    per_line = len(width) if isinstance(width, str) else width
    if isinstance(per_line, int):
        _refuse_if_long(len(str(text)) + lines * per_line)


def _check_wordwrap(
    text: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    *_: Any,
    **__: Any,
) -> None:
    # Each line but a paragraph's last is followed by a word that did not fit on it: a
    # paragraph of n characters has at most 2n / width + 1 lines, a break between each.
    if isinstance(text, str) and isinstance(width, int) and width > 0:
        breaks = min(len(text), 2 * len(text) // width) + 3 * len(text.splitlines()) + 1
        joint = len(wrapstring) if isinstance(wrapstring, str) else 1
        _refuse_if_long(len(text) + breaks * joint)


def _check_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    if fill_with is not None:  # the last batch is filled up to linecount
        _check_product([fill_with], linecount)


def _check_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    # As many lists as slices asks (each with one fill_with at most), made one by one
    # outside the template's code, where the deadline cannot stop them.
    each = 1 if fill_with is None else 2 + _size(fill_with)
    _refuse_if_long(_count(slices) * each)


def _check_tojson(_value: Any, indent: Any = None) -> None:
    # An indent is repeated for every level of nesting, all in one call of json's own.
    if isinstance(indent, int) and indent > 8 or isinstance(indent, str) and len(indent) > 8:
        raise SecurityError("tojson indents at most 8")


def _check_format_filter(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _refuse_if_long(_printf_size(value, kwargs or args))


# The filters whose text or list can be much larger than their arguments, and what checks
# those first; every filter's text is checked once made (``_checked_filter``).
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "batch": _check_batch,
    "center": lambda _value, width=80: _check_width(width),
    "format": _check_format_filter,
    "indent": _check_indent,
    "replace": lambda *args, **kwargs: _refuse_if_long(_replace_size(*args, **kwargs)),
    "slice": _check_slice,
    "tojson": _check_tojson,
    "wordwrap": _check_wordwrap,
}


class _Compiler(CodeGenerator):
    """Jinja's code generator, with ``~`` checked like ``+`` and the lists, tuples and
    dicts a template writes checked once made."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # the names a loop or {% set %} assigns to
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built(")
        super().visit_Tuple(node, frame)
        self.write(")")


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
        self.filters = {
            name: _checked_filter(jinja_filter, _FILTER_CHECKS.get(name))
            for name, jinja_filter in FILTERS.items()
        }
        self.filters["join"] = _checked_filter(_join)
        # Placeholder text has no place in a reply, and lipsum(n) takes as long as n asks.
        del self.globals["lipsum"]

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Bytes would escape every check made on text, and a reply has no use for them
        # ((1).to_bytes(10**8) built 100 MB).
        if isinstance(obj, str) and attr == "encode" or isinstance(obj, int) and attr == "to_bytes":
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            _refuse_if_long(_printf_size(left, right))
        return _checked_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
        owner = getattr(method, "__self__", None)
        _checked_result(args)  # a macro's varargs, a cycler's items, shown later
        _checked_result(kwargs)
        if isinstance(owner, str):
            args = _checked_text_call(owner, getattr(method, "__name__", ""), args, kwargs)
        return _checked_result(super().call(__context, __obj, *args, **kwargs))

    def joined(self, parts: Iterable[Any]) -> str:
        texts = [str(part) for part in parts]
        _refuse_if_long(sum(map(len, texts)))
        return "".join(texts)

    def built(self, value: Any) -> Any:
        return _checked_result(value)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """What a macro, ``caller()``, a ``{% set %}`` or ``{% filter %}`` block wrote, once
        its length is known: each piece is within bounds, but a loop writes the same large
        piece as often as it likes."""
        pieces = list(parts)
        _refuse_if_long(sum(map(len, pieces)))
        return "".join(pieces)


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
    """Stop the template once ``at`` has passed.

    A trace function on this thread, called on each line the compiled template runs (its
    code objects are named ``<template>``), so a loop that writes nothing is stopped as
    surely as one that writes; and on each Python call made meanwhile, so work inside one
    filter (``select`` testing every item against a long list) is stopped too. Whatever
    tracer was set (a debugger, coverage) is put back after.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self.before: Any = None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > self.at:
            raise SecurityError(f"a template may take at most {MAX_SECONDS:g} s to render")
        return self._line

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > self.at:  # any Python call, a filter's inner ones included
            raise SecurityError(f"a template may take at most {MAX_SECONDS:g} s to render")
        return self._line if frame.f_code.co_filename == "<template>" else None

    def __enter__(self) -> None:
        self.before = sys.gettrace()
        sys.settrace(self._call)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.before)


def _invalid(exc: Exception) -> Invalid:
    return Invalid(f"template error: {str(exc) or type(exc).__name__}")
