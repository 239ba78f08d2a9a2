"""A user's template either renders or is a template error: never a crash, never a huge build."""

from collections.abc import Iterator

import pytest

from rapport import templating
from rapport.problems import Invalid


@pytest.mark.parametrize(
    "source",
    [
        "{{ 1/0 }}",
        "{{ 1 + 'a' }}",
        "{{ range(10**6) | list }}",
        "{{ 2.0 ** 5000 }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ],
)
def test_a_template_that_fails_while_rendering_is_a_template_error(source: str) -> None:
    with pytest.raises(Invalid, match="^template error: "):
        templating.render(source, {})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**6 }}",
        "{{ [0] * 10**6 }}",
        "{{ 10**6 * ('ab',) }}",
        "{{ 7 ** 100000 }}",
        "{% set ns = namespace(n=10**90) %}"
        "{% for _ in range(12) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
    ],
)
def test_a_template_cannot_build_something_huge(source: str) -> None:
    with pytest.raises(Invalid, match="not allowed"):
        templating.render(source, {})


def test_ordinary_arithmetic_still_works() -> None:
    assert templating.render("{{ '-' * 3 }} {{ 6 * 7 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}) == (
        "--- 42 1024 0.5"
    )


def test_rendering_stops_once_the_output_is_long_enough() -> None:
    pulled = 0

    def lines() -> Iterator[str]:
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield "x" * 100

    out = templating.render("{% for line in lines %}{{ line }}{% endfor %}", {"lines": lines()})
    assert out == "x" * templating.MAX_OUTPUT
    assert pulled <= templating.MAX_OUTPUT // 100 + 1


def test_a_template_nested_too_deeply_is_refused_when_saved() -> None:
    with pytest.raises(Invalid, match="^template error: "):
        templating.check("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
