"""The HTML drift report: complete, self-contained, escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from modelyard.monitoring.config import DriftConfig
from modelyard.monitoring.drift import compare
from modelyard.monitoring.profiles import Profile
from modelyard.monitoring.report import histogram, render_drift_html

EVIL = "<script>alert('x')</script>"


class _Tags(HTMLParser):
    """Collects tags and attributes, and fails on unbalanced elements."""

    VOID = {"meta", "rect", "line", "br", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _profiles() -> tuple[Profile, Profile]:
    rng = np.random.default_rng(60)
    n = 5000
    ref = Profile.build(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.lognormal(10, 1, n),
            "plan": rng.choice(["free", "pro", "team"], n),
            EVIL: rng.choice(["a", "b"], n),
            "gone": rng.normal(size=n),
            "empty": np.full(n, 1.0),
            "never": np.full(n, np.nan),
        }
    )
    cur = Profile.build(
        {
            "age": rng.normal(48, 10, n),
            "income": rng.lognormal(10, 1, n),
            "plan": rng.choice(["free", "pro", "<b>enterprise</b>"], n),
            EVIL: rng.choice(["a", "b"], n),
            "empty": np.full(n, np.nan),
            "never": np.full(n, np.nan),
        }
    )
    return ref, cur


def test_report_renders_every_feature_and_verdict() -> None:
    ref, cur = _profiles()
    report = compare(ref, cur)
    html = render_drift_html(report, ref, cur, title="Drift of churn-model")
    parser = _Tags()
    parser.feed(html)
    assert parser.stack == []  # every element closed
    assert "<title>Drift of churn-model</title>" in html
    by = {f.feature: f for f in report.features}
    assert by["age"].status == "drift" and by["income"].status == "ok"
    assert by["gone"].status == "missing" and by["empty"].status == "missing"
    for name in ("age", "income", "plan", "gone", "empty"):
        assert f"<td>{name}</td>" in html
    assert html.count("DRIFT") >= 2 and "no drift" in html and "missing" in html
    assert "Dataset drift" in html
    # one plot per feature that has values on some side
    svgs = [t for t, _ in parser.tags if t == "svg"]
    assert len(svgs) == len(report.features) - 1  # "never" has no value on either side
    assert "no values to plot" in html


def test_report_escapes_user_input() -> None:
    ref, cur = _profiles()
    html = render_drift_html(compare(ref, cur), ref, cur, title="<i>t</i>")
    assert "<script" not in html  # the feature name is escaped, and the page has no scripts
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<b>enterprise</b>" not in html and "&lt;b&gt;enterprise&lt;/b&gt;" in html
    assert "<i>t</i>" not in html


def test_report_is_self_contained() -> None:
    ref, cur = _profiles()
    html = render_drift_html(compare(ref, cur), ref, cur, title="t")
    parser = _Tags()
    parser.feed(html)
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "img", "object")
        for key in ("src", "href"):
            assert attrs.get(key) is None, (tag, attrs)
    assert not re.search(r"https?://|url\(", html)


def test_insufficient_report_renders() -> None:
    ref, _ = _profiles()
    cur = Profile.build({"age": np.array([40.0, 41.0]), "plan": ["free", "pro"]})
    report = compare(ref, cur, DriftConfig(min_samples=30))
    assert report.status == "insufficient"
    html = render_drift_html(report, ref, cur, title="t")
    assert "insufficient data" in html and "fewer than min_samples=30" in html


def test_constant_and_single_sided_features_plot() -> None:
    ref = Profile.build({"c": np.full(100, 2.0), "only_ref": np.arange(100.0)})
    cur = Profile.build({"c": np.full(100, 2.0), "only_cur": ["x"] * 100})
    html = render_drift_html(compare(ref, cur), ref, cur, title="t")
    assert html.count("<svg") == 3
    assert 'height="nan"' not in html and "inf" not in html.replace("infinite", "")


def test_histograms_give_both_sides_shares_per_bin() -> None:
    ref, cur = _profiles()
    age = histogram(ref.features["age"], cur.features["age"])
    assert len(age.labels) == len(age.reference or []) == len(age.current or []) == 30
    assert sum(age.reference or []) == pytest.approx(0.99, abs=0.01)  # the central 99 %
    assert age.low is not None and age.high is not None and age.low < 40 < age.high
    # The current side moved up: more of its mass is in the upper half of the bins.
    assert sum((age.current or [])[15:]) > sum((age.reference or [])[15:])
    plan = histogram(ref.features["plan"], cur.features["plan"])
    assert set(plan.labels) == {"free", "pro", "team", "<b>enterprise</b>"}
    shares = dict(zip(plan.labels, plan.current or [], strict=True))
    assert shares["team"] == 0 and shares["free"] == pytest.approx(1 / 3, abs=0.03)
    gone = histogram(ref.features["gone"], None)
    assert gone.current is None and gone.reference is not None and not gone.empty
    assert histogram(ref.features["never"], cur.features["never"]).empty == "no values to plot"
    assert histogram(ref.features["age"], cur.features["plan"]).empty
