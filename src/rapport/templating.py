"""Templates written by users (canned replies, automation, bot answers) render in a sandbox."""

from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rapport.problems import Invalid

MAX_OUTPUT = 100_000
# About 3,000 digits: more than any reply needs, and cheap to multiply. Squaring a
# namespace variable in a loop would otherwise grow an integer to gigabytes.
MAX_INT_BITS = 10_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, refusing ``*`` and ``**`` where they would build something huge.

    ``{{ 'a' * 10**8 }}`` would allocate 100 MB before the output is cut to MAX_OUTPUT.
    Jinja folds constant expressions when it compiles a template, but never an
    intercepted operator, so a constant like that one meets the check too.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)


def _check_product(left: Any, right: Any) -> None:
    for items, times in ((left, right), (right, left)):
        if isinstance(items, str | list | tuple) and isinstance(times, int):
            if len(items) * times > MAX_OUTPUT:
                raise SecurityError(f"a repetition longer than {MAX_OUTPUT} is not allowed")
            return
    if isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise SecurityError(f"an integer beyond {MAX_INT_BITS} bits is not allowed")


def _check_power(base: Any, exponent: Any) -> None:
    # Floats overflow into an error by themselves; integers grow without limit.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base).bit_length() * exponent > MAX_INT_BITS:
            raise SecurityError(f"an integer beyond {MAX_INT_BITS} bits is not allowed")


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
        # Streamed, so a loop's output stops at MAX_OUTPUT instead of being built whole.
        for part in _env.from_string(source).generate(**context):
            parts.append(part)
            size += len(part)
            if size >= MAX_OUTPUT:
                break
    except Exception as exc:
        # Jinja's own errors are not all: the sandbox lets Python's arithmetic and type
        # errors (1/0, 1 + 'a', an OverflowError from range()) through, as documented.
        raise _invalid(exc) from exc
    return "".join(parts)[:MAX_OUTPUT]


def _invalid(exc: Exception) -> Invalid:
    return Invalid(f"template error: {str(exc) or type(exc).__name__}")
