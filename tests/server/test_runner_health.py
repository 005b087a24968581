"""ModelRunner health: failures in a row or a hung batch mark the model unhealthy; a success heals it."""

from __future__ import annotations

from server.runner import ModelRunner
from server.settings import Settings


def bare_runner(limit: int, seen: list) -> ModelRunner:
    """A runner without a model: only its health bookkeeping is exercised."""
    runner = ModelRunner.__new__(ModelRunner)
    runner.settings, runner.failures, runner.unhealthy = Settings(failure_limit=limit), 0, None
    runner.on_health = lambda name, reason: seen.append(reason)
    runner.manifest = type("M", (), {"name": "m"})()
    return runner


def test_failures_in_a_row_mark_unhealthy_and_a_success_heals():
    seen: list = []
    runner = bare_runner(3, seen)
    runner._outcome(RuntimeError("a"))
    runner._outcome(RuntimeError("b"))
    runner._outcome(None)  # the count starts again
    runner._outcome(RuntimeError("c"))
    runner._outcome(RuntimeError("d"))
    assert runner.unhealthy is None and seen == []
    runner._outcome(ValueError("e"))
    assert runner.unhealthy == "3 batches in a row failed (last: ValueError)"
    runner._outcome(ValueError("f"))  # still unhealthy: reported again only when the reason changes
    runner._outcome(None)
    assert runner.unhealthy is None
    assert seen == ["3 batches in a row failed (last: ValueError)", "4 batches in a row failed (last: ValueError)",
                    None]


def test_a_hung_batch_marks_unhealthy_until_a_batch_succeeds():
    seen: list = []
    runner = bare_runner(3, seen)
    runner._hung(60.0)
    assert runner.unhealthy == "a batch has run for more than 60 s (--hang-timeout-ms)"
    runner._outcome(None)
    assert seen == ["a batch has run for more than 60 s (--hang-timeout-ms)", None]
