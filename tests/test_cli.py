"""The command line: formats, outputs, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MIX = "office365-mix.pcap"
SCHEMA_1_KEYS = {"schema", "rules", "captures", "totals", "categories", "anomalies"}
SCHEMA_2_KEYS = SCHEMA_1_KEYS | {"inside", "directions", "flows_summary", "rates", "qos"}
CAPTURE_KEYS = {"path", "format", "link_types", "packets", "bytes", "first_ts", "last_ts",
                "complete", "error"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=cwd)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0]


def test_json_has_exactly_the_schema_keys(pcaps_dir: Path) -> None:
    proc = run("analyze", "--format", "json", str(pcaps_dir / MIX))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == SCHEMA_2_KEYS  # schema 1's keys, unchanged, and the new sections
    assert list(doc)[:6] == ["schema", "rules", "captures", "totals", "categories",
                             "anomalies"]
    assert doc["schema"] == 2 and doc["rules"] == "office365-2015"
    assert set(doc["captures"][0]) == CAPTURE_KEYS
    assert set(doc["totals"]) == {"packets", "bytes"}
    assert list(doc["categories"])[-2:] == ["other", "non-ip"]
    assert sum(c["packets"] for c in doc["categories"].values()) == doc["totals"]["packets"]
    assert sum(c["bytes"] for c in doc["categories"].values()) == doc["totals"]["bytes"]


def test_csv_rows_equal_the_json_numbers(pcaps_dir: Path) -> None:
    doc = json.loads(run("analyze", "--format", "json", str(pcaps_dir / MIX)).stdout)
    proc = run("analyze", "--format", "csv", str(pcaps_dir / MIX))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["category"] for r in rows] == list(doc["categories"])
    for r in rows:
        c = doc["categories"][r["category"]]
        assert (int(r["packets"]), int(r["bytes"])) == (c["packets"], c["bytes"])
        assert float(r["bytes_share"]) == pytest.approx(c["bytes"] / doc["totals"]["bytes"],
                                                        abs=1e-6)


def test_table_is_the_default_and_names_every_category(pcaps_dir: Path) -> None:
    proc = run("analyze", str(pcaps_dir / MIX))
    assert proc.returncode == 0
    for name in ("audio", "desktop-sharing", "smtp-relay", "pop3s", "other", "non-ip", "total"):
        assert name in proc.stdout
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


def test_output_file(pcaps_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run("analyze", "--format", "json", "-o", str(out), str(pcaps_dir / MIX))
    assert proc.returncode == 0 and proc.stdout == ""
    assert json.loads(out.read_text())["totals"]["packets"] > 0


def test_bad_rules_file_is_one_line_exit_2(tmp_path: Path, pcaps_dir: Path) -> None:
    rules = tmp_path / "mine.toml"
    rules.write_text('[[rule]]\nname = "x"\nprotocols = ["tcp"]\nclient.tcp = ["1-0"]\n'
                     'server.tcp = [1]\n')
    proc = run("analyze", "--rules", str(rules), str(pcaps_dir / MIX))
    assert proc.returncode == 2
    assert_one_line_error(proc, str(rules), "rule 'x'", "bad port range '1-0'")


def test_custom_rules_change_the_categories(tmp_path: Path, pcaps_dir: Path) -> None:
    rules = tmp_path / "web.toml"
    rules.write_text('name = "web"\n[[rule]]\nname = "web"\nprotocols = ["tcp"]\n'
                     'client.tcp = ["ephemeral"]\nserver.tcp = [443, 80]\n')
    doc = json.loads(run("analyze", "--format", "json", "--rules", str(rules),
                         str(pcaps_dir / MIX)).stdout)
    assert doc["rules"] == "web"
    assert list(doc["categories"]) == ["web", "other", "non-ip"]
    default = json.loads(run("analyze", "--format", "json", str(pcaps_dir / MIX)).stdout)
    web = default["categories"]["https"]["packets"] + default["categories"]["http"]["packets"]
    # Media on TCP 443 from a QoS port is "audio"/"video"/... by default, "web" here.
    assert doc["categories"]["web"]["packets"] >= web


def test_a_bad_capture_does_not_stop_the_others(pcaps_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    proc = run("analyze", "--format", "json", str(missing), str(pcaps_dir / MIX),
               str(pcaps_dir / "corrupt-record.pcap"))
    assert proc.returncode == 2  # unreadable beats corrupt
    doc = json.loads(proc.stdout)
    assert doc["captures"][0]["path"] == str(missing)
    assert doc["captures"][1]["complete"] is True and doc["captures"][1]["packets"] > 0
    assert doc["captures"][2]["complete"] is False
    errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 2 and "Traceback" not in proc.stderr
    assert str(missing) in errors[0] and "No such file" in errors[0]


def test_directories_and_globs_expand(pcaps_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "caps" / "deeper"
    d.mkdir(parents=True)
    for name in ("office365-mix.pcap", "ipv6.pcap"):
        (d / name).write_bytes((pcaps_dir / name).read_bytes())
    by_dir = json.loads(run("analyze", "--format", "json", str(tmp_path / "caps")).stdout)
    by_glob = json.loads(run("analyze", "--format", "json",
                             str(tmp_path / "caps" / "**" / "*.pcap")).stdout)
    assert len(by_dir["captures"]) == 2
    assert by_dir["totals"] == by_glob["totals"]


@pytest.mark.parametrize(("code", "status", "said"), [(0, 0, ""), (None, 0, ""), (2, 2, ""),
                                                    ("bad", 1, "bad\n")])
def test_leaving_flushes_what_was_written(code: object, status: int, said: str) -> None:
    # The command leaves without the interpreter's teardown, which would flush
    # buffered output: what was written must be flushed first, well past what a pipe
    # holds. (PYTHONUNBUFFERED would write as it goes.)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    script = ("import sys; from classifier.cli import _leave; "
              f"sys.stdout.write('x' * 300_000); print('end'); _leave({code!r})")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (status, "x" * 300_000 + "end\n", said)


def test_stdin_pipe(pcaps_dir: Path) -> None:
    data = (pcaps_dir / MIX).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "--format", "json",
                           "-"], input=data, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    ref = json.loads(run("analyze", "--format", "json", str(pcaps_dir / MIX)).stdout)
    assert doc["categories"] == ref["categories"]
    assert doc["captures"][0]["path"] == "-"


def test_unknown_link_type_warns_with_its_number(pcaps_dir: Path) -> None:
    proc = run("analyze", "--format", "json", str(pcaps_dir / "unknown-linktype.pcap"))
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["categories"]["non-ip"]["packets"] == doc["totals"]["packets"]
    lt = doc["captures"][0]["link_types"][0]
    assert f"link type {lt} is not decoded" in proc.stderr


def test_no_arguments_is_a_usage_error() -> None:
    proc = run("analyze")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_categories_only_gives_schema_1_sections_with_the_same_numbers(pcaps_dir: Path) -> None:
    full = json.loads(run("analyze", "--format", "json", str(pcaps_dir / MIX)).stdout)
    proc = run("analyze", "--format", "json", "--categories-only", str(pcaps_dir / MIX))
    doc = json.loads(proc.stdout)
    assert set(doc) == SCHEMA_1_KEYS
    for key in SCHEMA_1_KEYS:
        assert doc[key] == full[key]


def test_glob_picks_files_in_directories(pcaps_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "archive" / "day1"
    d.mkdir(parents=True)
    (d / "a.pcap").write_bytes((pcaps_dir / MIX).read_bytes())
    (d / "notes.txt").write_text("not a capture")
    everything = run("analyze", "--format", "json", str(tmp_path / "archive"))
    assert everything.returncode == 2  # notes.txt is not a capture
    only = run("analyze", "--format", "json", "--glob", "*.pcap", str(tmp_path / "archive"))
    assert only.returncode == 0, only.stderr
    assert [c["path"] for c in json.loads(only.stdout)["captures"]] == [str(d / "a.pcap")]
