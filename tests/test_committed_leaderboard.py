"""The committed leaderboard is what today's code makes of the committed runs (the roots `reproduce` reports on)."""

from __future__ import annotations

from pathlib import Path

from fastrm_bench.report import Report, leaderboard_tables

ROOT = Path(__file__).resolve().parent.parent
#: the folders `fastrm-bench reproduce --out results` gives its report, as it names them (relative: run_dir column)
REPORTED = ("results/runs", "results/profile", "results/ablations/runs", "results/sanity", "results/hallucination",
            "results/multi")


def test_the_committed_leaderboard_regenerates_equal(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    report = Report(tmp_path, "test")
    leaderboard_tables([Path(p) for p in REPORTED], report)
    for name in ("leaderboard.csv", "leaderboard.md"):
        assert (tmp_path / name).read_text() == (ROOT / "results" / "report" / name).read_text(), name
