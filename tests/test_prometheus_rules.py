"""The shipped Prometheus alerting rules (rootfs/usr/share/nvr/prometheus/nvr-pair.rules.yml):
promtool accepts them, they fire when they should and stay silent when they should not
(tests/data/nvr-pair.rules.test.yml), and they name only alert ids, metrics and labels the
firmware exports, so a renamed metric cannot silently turn an alert off."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.failover.advert import AdvertError
from firmware.metrics import registry_for
from firmware.roles import Role
from firmware.status import BoardStatus, CameraView, MirrorView, PairView, PathCounts

RULES = ROOT / "rootfs/usr/share/nvr/prometheus/nvr-pair.rules.yml"
UNIT_TESTS = ROOT / "tests/data/nvr-pair.rules.test.yml"
ALERTS = {
    "NvrPairDualActive",
    "NvrPairNoActive",
    "NvrPairNoStandby",
    "NvrPeerKeyMismatch",
    "NvrHeartbeatPathSilent",
    "NvrMirrorLag",
    "NvrRoleFlapping",
    "NvrBoardDown",
    "NvrCriticalAlert",
    "NvrCameraNotRecording",
}
# Labels the site's scrape config adds to every series of a board (see the rules file's head).
TARGET_LABELS = {"job", "instance", "pair"}
# Series Prometheus makes itself, not the firmware.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """A missing promtool is a broken setup, not a reason to skip: the rules would ship
    unchecked."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: it comes with Debian's `prometheus` package, which "
            "`bash hil/bootstrap.sh` installs (or: apt-get install prometheus)"
        )
    return path


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


# --- reading the rules file without a YAML library (not a dependency of the project) ---------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _value(lines: list[str], i: int) -> str:
    """The scalar at `key: value` on line i, following a block scalar (`|`, `>-`, ...) onto
    the more indented lines below it."""
    head = lines[i].split(":", 1)[1].strip()
    if head and head[0] not in "|>":
        return head.strip("'\"")
    body = []
    for line in lines[i + 1 :]:
        if line.strip() and _indent(line) <= _indent(lines[i]):
            break
        body.append(line.strip())
    return "\n".join(body).strip()


def parse_rules(text: str) -> dict[str, dict[str, str]]:
    """Alert name -> its expr, severity, summary and description."""
    lines = text.splitlines()
    rules: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for i, line in enumerate(lines):
        key = line.strip().removeprefix("- ").split(":", 1)[0]
        if key == "alert":
            current = rules.setdefault(_value(lines, i), {})
        elif current is not None and key in ("expr", "severity", "summary", "description"):
            current[key] = _value(lines, i)
    return rules


def without_annotations(text: str) -> str:
    """The rules without their `annotations:` blocks: promtool's unit tests compare
    annotations word for word, and the cases are about when alerts fire, not their wording."""
    out: list[str] = []
    skip_below: int | None = None
    for line in text.splitlines():
        if skip_below is not None:
            if not line.strip() or _indent(line) > skip_below:
                continue
            skip_below = None
        if line.strip() == "annotations:":
            skip_below = _indent(line)
            continue
        out.append(line)
    return "\n".join(out) + "\n"


# --- reading PromQL expressions ----------------------------------------------------------------

SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects: what is left after strings, label matchers,
    ranges and grouping clauses are taken out, and functions and keywords skipped."""
    s = re.sub(r'"[^"]*"', " ", expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[0-9][0-9a-zA-Z.]*|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if name and not call and name not in PROMQL_WORDS:
            names.add(name)
    return names


def matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every label matcher in the expression."""
    return [
        (metric, *m.groups())
        for metric, body in SELECTOR.findall(expr)
        for m in MATCHER.finditer(body)
    ]


def test_expression_readers() -> None:
    expr = (
        'max by (pair, instance) (increase(nvr_a_total{reason="hmac"}[2m]) > 0)'
        ' and on (pair) label_replace(nvr_b{id=~"x-.*"}, "path", "$1", "id", "x-(.*)")'
        " or up == 0 unless nvr_c offset 5m"
    )
    assert metric_names(expr) == {"nvr_a_total", "nvr_b", "up", "nvr_c"}
    assert matchers(expr) == [("nvr_a_total", "reason", "=", "hmac"), ("nvr_b", "id", "=~", "x-.*")]


# --- the firmware's side: a real exposition ------------------------------------------------------


def exposition() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label -> values, from firmware/metrics.py's collector on a board with
    every part present (pair, mirror, cameras, every alert id and drop reason), so each family
    has samples and counters carry the `_total` prometheus_client gives them."""
    alerts = Alerts()
    for aid in AlertId:
        alerts.raise_(aid, Severity.WARNING, "test", 1)
    camera = CameraView(
        name="cam1", url="rtsp://192.0.2.31/cam1", recording=True, holding=False,
        ring_seconds=None, codec="h264", last_frame_wall_us=1, ingest_lag_seconds=0.1,
        error=None, segments=1, bytes=1, frames=1, reconnects=0, gaps={"camera": 1},
    )  # fmt: skip
    pair = PairView(
        role=Role.ACTIVE, epoch=1, effective_priority=100, vip_held=True,
        role_changes={"init": 1, "standby": 1, "active": 1},
        paths=tuple(PathCounts(n, 1, 1, 0) for n in ("lan", "sync", "serial")),
        dropped=dict.fromkeys([*AdvertError.REASONS, "late", "replay"], 1),
        peer_heard_seconds=0.1, peer=None, detail={},
    )  # fmt: skip
    mirror = MirrorView(
        lag_seconds=1.0, behind_bytes=0, fetched_segments=1, fetched_bytes=1,
        errors={"io": 1}, spares_removed=0, detail={},
    )  # fmt: skip
    board = BoardStatus(
        board="a", role=Role.ACTIVE, virtual_ip="192.0.2.100/24", version="t", hostname="h",
        uptime_seconds=1.0, data_dir="/d", disk_free_bytes=1, disk_total_bytes=2,
        cameras=(camera,), alerts=tuple(alerts.active()), alerts_raised=alerts.raised_total,
        retention_deleted={"age": 1}, worker_restarts=0, writes_held=False, pair=pair,
        mirror=mirror, hardware=None,
    )  # fmt: skip
    text = generate_latest(registry_for(lambda: board)).decode()
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for k, v in sample.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, str]]:
    return parse_rules(RULES.read_text())


# --- the tests -----------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(promtool: str) -> None:
    r = run(promtool, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


def test_promtool_refuses_a_broken_copy(promtool: str, tmp_path: Path) -> None:
    """The check bites: one lost bracket in one expression fails the whole file."""
    text = RULES.read_text()
    assert text.count("count by (pair) (") == 1
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(text.replace("count by (pair) (", "count by (pair ("))
    r = run(promtool, "check", "rules", str(broken))
    assert r.returncode != 0
    assert '"NvrPairDualActive": could not parse expression' in r.stdout + r.stderr


def test_promtool_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Every alert fires in the cases where it should, and only there."""
    (tmp_path / "nvr-pair.rules.yml").write_text(without_annotations(RULES.read_text()))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    r = run(promtool, "test", "rules", str(tmp_path / UNIT_TESTS.name))
    assert r.returncode == 0, r.stdout + r.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", UNIT_TESTS.read_text()))
    assert tested == ALERTS


def test_without_annotations_keeps_the_rules(rules: dict[str, dict[str, str]]) -> None:
    stripped = without_annotations(RULES.read_text())
    assert "annotations:" not in stripped and "summary:" not in stripped
    kept = parse_rules(stripped)
    assert {a: (r["expr"], r["severity"]) for a, r in kept.items()} == {
        a: (r["expr"], r["severity"]) for a, r in rules.items()
    }


def test_every_alert_has_severity_and_names_the_board(rules: dict[str, dict[str, str]]) -> None:
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule.get("severity") in set(Severity), name
        for key in ("summary", "description"):
            assert "{{ $labels.instance }}" in rule.get(key, ""), (name, key)


def test_alert_ids_are_the_firmware_s(rules: dict[str, dict[str, str]]) -> None:
    """The rules name alerts by the ids firmware/alert_ids.py defines; a regular expression
    must match at least one of them."""
    ids = {a.value for a in AlertId}
    named = [
        (a, op, v) for a, r in rules.items() for _, k, op, v in matchers(r["expr"]) if k == "id"
    ]
    assert named, "no rule names an alert id"
    for alert, op, value in named:
        if op in ("=", "!="):
            assert value in ids, (alert, value)
        else:
            assert any(re.fullmatch(value, i) for i in ids), (alert, value)


def test_metrics_and_labels_are_exported(rules: dict[str, dict[str, str]]) -> None:
    """Every series, label and label value the rules select exists in a real exposition of
    firmware/metrics.py (counters with their `_total`)."""
    exported = exposition()
    assert "nvr_pair_role_changes_total" in exported and "nvr_pair_role_changes" not in exported
    used = set()
    for alert, rule in rules.items():
        for name in metric_names(rule["expr"]):
            used.add(name)
            assert name in exported or name in PROMETHEUS_SERIES, (alert, name)
        for metric, label, op, value in matchers(rule["expr"]):
            if metric in PROMETHEUS_SERIES or label in TARGET_LABELS:
                continue
            assert label in exported[metric], (alert, metric, label)
            if label == "severity":
                assert value in set(Severity), (alert, value)
            elif label != "id" and op == "=":
                assert value in exported[metric][label], (alert, metric, label, value)
    assert {"nvr_pair_role", "nvr_alert_active", "nvr_camera_recording", "up"} <= used
