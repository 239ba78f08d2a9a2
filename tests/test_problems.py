"""Problem documents: how a wait is said."""

from rapport.problems import wait_text


def test_a_wait_is_said_as_a_person_reads_it_and_never_shorter_than_retry_after() -> None:
    said = {s: wait_text(s) for s in (0, 1, 2, 59, 100, 119, 120, 121, 300, 3600, 7140, 7200)}
    assert said == {
        0: "1 second",  # Retry-After is at least 1
        1: "1 second",
        2: "2 seconds",
        59: "59 seconds",
        100: "100 seconds",
        119: "119 seconds",
        120: "2 minutes",
        121: "3 minutes",  # rounded up: asked again at 2 minutes, it would still be refused
        300: "5 minutes",
        3600: "60 minutes",
        7140: "119 minutes",
        7200: "2 hours",
    }
    assert wait_text(7201) == "2 hours 1 minute"
    assert wait_text(3 * 3600 + 600) == "3 hours 10 minutes"
