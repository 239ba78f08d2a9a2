"""Templates written by users (canned replies, automation, bot answers) render in a sandbox."""

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rapport.problems import Invalid

# Immutable: a template can read what it is given and change nothing, call no unsafe
# attribute, and reach no module. Undefined names are errors, not silent blanks.
_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
MAX_OUTPUT = 100_000


def check(source: str) -> None:
    """Refuse a template that does not parse, with the reason."""
    try:
        _env.parse(source)
    except TemplateError as exc:
        raise Invalid(f"template error: {exc}") from exc


def render(source: str, context: dict[str, Any]) -> str:
    """Render a user's template with only ``context`` in reach."""
    try:
        out = _env.from_string(source).render(**context)
    except TemplateError as exc:
        raise Invalid(f"template error: {exc}") from exc
    return out[:MAX_OUTPUT]
