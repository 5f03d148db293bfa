"""Progress bars: a live tqdm bar on a terminal; off one, a few plain lines and a summary line at close."""

from __future__ import annotations

import io

import pytest
from tqdm.std import tqdm

from distilsearch.kdlib.core import progress
from distilsearch.kdlib.core.progress import LogProgress, is_interactive, progress_bar


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run_bar(stream: io.StringIO, steps: int, total: int | None = 1000, **options: object) -> str:
    with progress_bar(total=total, desc="training", unit="step", file=stream, **options) as bar:
        for step in range(steps):
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    return stream.getvalue()


def test_a_log_gets_a_summary_line_not_a_line_per_update() -> None:
    text = run_bar(io.StringIO(), 1000)
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3
    assert "\r" not in text
    assert lines[-1].startswith("training: done 1000/1000 step in ")
    assert "step/s" in lines[-1] and lines[-1].endswith("loss=0.001")


def test_a_slow_bar_writes_a_line_each_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_MIN_GAP_S", 0.0)
    lines = run_bar(io.StringIO(), 1000).splitlines()
    assert [line.split(" after ")[0] for line in lines[:-1]] == [
        f"training: {n}/1000 step ({n // 10}%)" for n in range(100, 1000, 100)
    ]
    assert lines[-1].startswith("training: done 1000/1000 step")


def test_a_bar_closed_early_says_where_it_stopped() -> None:
    assert run_bar(io.StringIO(), 10).splitlines()[-1].startswith("training: stopped at 10/1000 step in ")


def test_an_unknown_total_counts_what_was_done() -> None:
    assert run_bar(io.StringIO(), 50, total=None).splitlines()[-1].startswith("training: done 50 step in ")


def test_disabled_or_not_left_bars_write_no_summary() -> None:
    assert run_bar(io.StringIO(), 1000, disable=True) == ""
    assert run_bar(io.StringIO(), 1000, leave=False) == ""


def test_a_terminal_gets_the_usual_tqdm_bar() -> None:
    stream = FakeTerminal()
    with progress_bar(total=100, desc="training", unit="step", file=stream, mininterval=0) as bar:
        assert isinstance(bar, tqdm) and not isinstance(bar, LogProgress)
        for _ in range(100):
            bar.update(1)
    text = stream.getvalue()
    assert text.count("\r") > 10
    assert "training: 100%|" in text and "100/100" in text and text.endswith("\n")


def test_interactive_only_for_terminals() -> None:
    closed = io.StringIO()
    closed.close()
    assert is_interactive(FakeTerminal())
    assert not is_interactive(io.StringIO()) and not is_interactive(closed) and not is_interactive(object())


def test_a_renamed_bar_keeps_one_separator() -> None:
    stream = io.StringIO()
    with progress_bar(total=3, desc="distilling", unit="step", file=stream) as bar:
        bar.set_description("distilling [prediction]")
        bar.update(3)
    assert stream.getvalue().splitlines()[-1].startswith("distilling [prediction]: done 3/3 step in ")
