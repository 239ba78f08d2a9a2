"""A user's template either renders or is a template error: never a crash, never a huge build."""

import sys
import tracemalloc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from rapport import templating
from rapport.problems import Invalid
from tests.conftest import auth
from tests.factories import World


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


BIG = "{% set big = 'a' * 50000 %}"


@pytest.mark.parametrize(
    "source",
    [
        BIG + "{{ ('{0}' * 100).format(big) | length }}",
        BIG + "{{ ('{0}' * 100).format({'a': big}) | length }}",
        BIG + "{{ ('{0[a]}' * 100).format({'a': big}) | length }}",
        BIG + "{{ ('{a}' * 100).format_map({'a': big}) | length }}",
        BIG + "{{ (('%(a)s' * 100) % {'a': big}) | length }}",
        BIG + "{{ ('%(a)s' * 100) | format(a=big) | length }}",
        "{{ ('\t' * 1000).expandtabs(1000) | length }}",
        "{{ ('a' * 1000).translate({97: 'b' * 1000}) | length }}",
        "{{ [1] | batch(5000000, 0) | first | length }}",
        "{% set s = '\\\\' * 10000 %}{{ s | tojson | tojson | tojson | tojson | length }}",
        "{{ ('a' * 1000) | wordwrap(1, wrapstring='x' * 1000) | length }}",
        "{{ ('&' * 15000) | urlencode | urlencode | urlencode | length }}",
    ],
)
def test_no_single_call_multiplies_what_it_is_given(source: str) -> None:
    # Each of these was one call into Python, which the deadline cannot stop: format and %
    # checked only their widths, not how many fields showed how large a value; expandtabs
    # checked the tab size, not how many tabs; translate, batch's fill and wordwrap's
    # breaks went unchecked; and tojson or urlencode, each a few times longer, were chained.
    # Scaled up, one rendering took gigabytes in the worker every workspace shares.
    with pytest.raises(Invalid, match="not allowed|at most"):
        templating.render(source, {})


@pytest.mark.parametrize(
    "source",
    [
        BIG + "{% set out %}{% for _ in range(30) %}{{ big }}{% endfor %}{% endset %}"
        "{{ out | length }}",
        BIG + "{{ [big, big, big] }}",
        BIG + "{% set ns = namespace() %}{% macro keep() %}{% set ns.kept = varargs %}"
        "{% endmacro %}{{ keep(big, big, big) }}{{ ns.kept }}",
        BIG + "{{ ([none] * 30) | map('default', big, true) | list }}",
        "{{ [1] | slice(150000) | list | length }}",
        "{{ ('x'.encode() * 200000) | length }}",
    ],
)
def test_nothing_is_built_of_many_copies_of_a_large_text(source: str) -> None:
    # A block, a macro or a loop wrote the same large text many times, and only the joined
    # result was seen (or not at all: a {% set %} block); a list of many references to it
    # cost little until shown, which built every copy; slice made as many lists as asked
    # in one call; and bytes (from encode) escaped every check made on text.
    with pytest.raises(Invalid, match="not allowed|at most|unsafe"):
        templating.render(source, {})


def test_there_is_no_lorem_ipsum_to_ask_for_in_any_length() -> None:
    # lipsum(n) built n paragraphs in one call, as long as n asked.
    with pytest.raises(Invalid, match="'lipsum' is undefined"):
        templating.render("{{ lipsum(2000, html=False) | length }}", {})


def test_ordinary_formatting_still_works() -> None:
    source = (
        "{{ '{0[name]} {1}'.format(who, 2) }} {{ '{name}'.format_map(who) }} "
        "{{ 'Hi %(name)s' % who }} {{ '%s-%s' % (1, 2) }} {{ 'ab'.translate({97: 'xy'}) }} "
        "{{ 'a\tb'.expandtabs(2) }} {{ who | tojson }} {{ 'one two three' | wordwrap(8) }} "
        "{{ [1, 2, 3] | batch(2, 0) | list }}"
    )
    assert templating.render(source, {"who": {"name": "Kim"}}) == (
        'Kim 2 Kim Hi Kim 1-2 xyb a b {"name": "Kim"} one two\nthree [[1, 2], [3, 0]]'
    )


def test_a_template_that_runs_too_long_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.2)
    silent = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(Invalid, match="at most 0.2 s"):  # stopped: its end is hours away
        templating.render(silent, {})
    before = sys.gettrace()
    templating.render("{{ 1 }}", {})
    assert sys.gettrace() is before


def test_work_inside_one_filter_is_stopped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the template's own lines were watched: one expression whose filter tests every
    # item against a long list (seconds of work in the filter's loop) ran to its end.
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.2)
    busy = "{% set L = range(15000)|list %}{{ range(15000)|select('in', L)|list|length }}"
    with pytest.raises(Invalid, match="at most 0.2 s"):  # it ran about a second
        templating.render(busy, {})


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


# 300 times MAX_OUTPUT: the sandbox refuses before building anything larger than that.
HUGE = 30_000_000


def _peak_bytes_while_rendering(source: str) -> int:
    tracemalloc.start()
    try:
        try:
            templating.render(source, {})
        except Invalid:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "source",
    [
        # tojson's indent is repeated for every level, in one call of json's own.
        f"{{{{ [1]|tojson(indent={HUGE}) }}}}",
        # A printf key with nested parentheses: the pattern stopped at the inner ")", so
        # the width after "((a))" went uncounted; Python reads the key "(a)" and pads.
        f'{{{{ "%((a)){HUGE}s" % {{"(a)": "x"}} }}}}',
        f"{{{{ '%((a)){HUGE}s'|format(**{{'(a)': 'x'}}) }}}}",
        # int.to_bytes was a safe attribute, and bytes escape every check made on text.
        f"{{{{ (1).to_bytes({HUGE}, 'big')|length }}}}",
    ],
    ids=["tojson-indent", "printf-nested-key", "format-filter-nested-key", "int-to_bytes"],
)
def test_a_template_cannot_allocate_far_beyond_what_it_may_build(source: str) -> None:
    peak = _peak_bytes_while_rendering(source)
    assert peak < 5 * templating.MAX_BUILT, f"rendering allocated {peak / 1e6:.0f} MB"


def test_an_agents_canned_response_cannot_make_the_api_process_allocate_much(
    client: TestClient, world: World
) -> None:
    # Any agent may save a canned response, and it renders in the API process every
    # workspace shares: tojson(indent=3e8) took 8.5 s and 2 GB, past the 2 s deadline.
    made = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "boom", "text": "{{ [[[1]]]|tojson(indent=10000000) }}"},
        headers=auth(world.bob),
    )
    assert made.status_code == 201, made.text
    customer = world.acme.opened.customer.id
    tracemalloc.start()
    try:
        r = client.get(
            f"/api/v1/canned-responses/{made.json()['id']}/for-customer/{customer}",
            headers=auth(world.bob),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 422, r.text
    assert peak < 5 * templating.MAX_BUILT, f"{peak / 1e6:.0f} MB allocated"
