"""A user's template either renders or is a template error: never a crash, never a huge build."""

import sys
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


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' | center(10**9) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x'.zfill(10**9) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ '%(n)999999999s' % {'n': 1} }}",
        "{{ '%0999999999d' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{w}}'.format(1, w=10**9) }}",
        "{{ ('x' * 1000) | replace('', 'y' * 1000) }}",
        "{{ ('x' * 1000).replace('x', 'y' * 1000) }}",
        "{{ ('a\n' * 50000) | indent('x' * 1000) }}",
        "{% set ns = namespace(s='x') %}"
        "{% for _ in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% set ns = namespace(s='x') %}"
        "{% for _ in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% set ns = namespace(l=[0]) %}"
        "{% for _ in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
        "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}"
        "{% endif %}{% endmacro %}{{ f('x', 40) }}",
        "{{ range(100000) | map('center', 50000) | join }}",
        "{{ ('x' * 100000).join(range(100000) | map('string')) }}",
        "{{ range(100000) | join('x' * 100000) }}",
        "{{ [['x' * 1000] * 100] * 100 }}",
    ],
)
def test_no_operation_builds_something_huge(source: str) -> None:
    with pytest.raises(Invalid, match="not allowed|at most"):
        templating.render(source, {})


def test_a_template_that_runs_too_long_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.2)
    silent = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(Invalid, match="at most 0.2 s"):  # stopped: its end is hours away
        templating.render(silent, {})
    before = sys.gettrace()
    templating.render("{{ 1 }}", {})
    assert sys.gettrace() is before


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "{{ '%.2f' | format(3.14159) }} {{ '{:,}'.format(1234567) }} {{ names | join(', ') }} "
        "{{ 'Hi ' ~ name }} {{ 'x' | center(5) }} {{ 'a-b' | replace('-', '+') }} "
        "{{ 'a\nb' | indent(2) }} {{ '%s and %s' % ('this', 'that') }} {{ [1] + [2] }} "
        "{{ 'x'.rjust(3, '.') }} {{ ', '.join(names) }} {{ names | map('upper') | join }}"
    )
    out = templating.render(source, {"names": ["Kim", "Lee"], "name": "Kim"})
    assert out == (
        "3.14 1,234,567 Kim, Lee Hi Kim   x   a+b a\n  b this and that [1, 2] ..x Kim, Lee KIMLEE"
    )
