"""The names members give what they make in a workspace (a macro, a saved view): trimmed,
bounded, and unique whatever their case."""

from collections.abc import Iterable

from rapport.problems import Invalid


def clean(name: str, *, what: str, most: int) -> str:
    """``name`` trimmed; refused, naming the field, when empty or over ``most`` characters
    (``what``: "a macro", said in the refusal)."""
    name = name.strip()
    if not name:
        raise Invalid(f"name: {what} needs a name")
    if len(name) > most:
        raise Invalid(f"name: {what}'s name is at most {most} characters")
    return name


def taken(name: str, names: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``names``, ignoring case. Compared here, not by SQL's
    lower(): SQLite's folds ASCII letters only ("Ärger")."""
    wanted = name.casefold()
    return any(other.casefold() == wanted for other in names)
