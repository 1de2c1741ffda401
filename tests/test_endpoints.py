"""Microsoft's endpoint list imported as a rule set; the rules commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from classifier.endpoints import load_endpoints
from classifier.errors import RulesError
from classifier.prefixes import parse_prefix
from classifier.rules import load_rules

ROOT = Path(__file__).resolve().parent.parent

# Shaped like the web service's answer: ids 1, 11, 12, 31 and a Common set, fields
# absent here and there, ports with spaces, unsorted, ranges, IPv6.
ENDPOINTS: list[dict[str, Any]] = [
    {"id": 12, "serviceArea": "Skype", "serviceAreaDisplayName": "Skype for Business Online "
     "and Microsoft Teams", "urls": ["*.lync.com", "*.teams.microsoft.com",
                                     "teams.microsoft.com"],
     "tcpPorts": "443, 80", "udpPorts": "443", "expressRoute": False, "category": "Allow",
     "required": True},
    {"id": 11, "serviceArea": "Skype", "serviceAreaDisplayName": "Skype for Business Online "
     "and Microsoft Teams", "ips": ["13.107.64.0/18", "52.112.0.0/14", "52.122.0.0/15",
                                    "2603:1063::/38"],
     "udpPorts": "3481,3478, 3479,3480", "expressRoute": True, "category": "Optimize",
     "required": True},
    {"id": 1, "serviceArea": "Exchange", "serviceAreaDisplayName": "Exchange Online",
     "urls": ["outlook.office.com", "outlook.office365.com"],
     "ips": ["13.107.6.152/31", "40.96.0.0/13", "52.96.0.0/14", "2603:1006::/40"],
     "tcpPorts": "80,443", "udpPorts": "443", "expressRoute": True, "category": "Optimize",
     "required": True},
    {"id": 31, "serviceArea": "SharePoint", "urls": ["*.sharepoint.com"],
     "ips": ["13.107.136.0/22", "40.108.128.0/17", "52.104.0.0/14", "2620:1ec:8f8::/46"],
     "tcpPorts": "443,80", "category": "Optimize", "required": True},
    {"id": 46, "serviceArea": "Common", "urls": ["*.office.com"], "category": "Default",
     "required": False, "notes": "No ports listed"},
    {"id": 99, "serviceArea": "Common", "tcpPorts": "443", "category": "Allow",
     "required": False, "notes": "Neither names nor addresses"},
]


def write(tmp_path: Path, doc: Any, name: str = "worldwide.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_import_compiles_every_field(tmp_path: Path) -> None:
    rules = load_endpoints(write(tmp_path, ENDPOINTS))
    # Optimize first (by id), then Allow, then Default; the set without servers is gone.
    assert [r.name for r in rules.rules] == ["exchange-1", "skype-11", "sharepoint-31",
                                             "skype-12", "common-46"]
    by = {r.name: r for r in rules.rules}
    assert by["skype-11"].category == "skype-optimize"
    assert by["skype-11"].protocols == ("udp",)
    assert by["skype-11"].server["udp"] == ((3478, 3478), (3479, 3479), (3480, 3480),
                                            (3481, 3481))
    assert by["skype-11"].client["udp"] == ((0, 65535),)
    assert by["skype-11"].addresses[-1] == parse_prefix("2603:1063::/38")
    assert by["skype-11"].names == ()
    assert by["skype-12"].names == ("*.lync.com", "*.teams.microsoft.com", "teams.microsoft.com")
    assert by["skype-12"].server == {"tcp": ((80, 80), (443, 443)), "udp": ((443, 443),)}
    assert by["exchange-1"].category == "exchange-optimize"
    assert "Exchange Online" in by["exchange-1"].description
    assert by["sharepoint-31"].protocols == ("tcp",)
    assert by["common-46"].server == {"tcp": ((0, 65535),), "udp": ((0, 65535),)}
    assert rules.categories == ("exchange-optimize", "skype-optimize", "sharepoint-optimize",
                                "skype-allow", "common-default", "other", "non-ip")
    v4 = 0xFFFF << 32
    assert rules.classify_one(17, 50000, 3479, 1, v4 | 0x34700001) == "skype-optimize"
    assert rules.classify_one(6, 50000, 443, 1, 5, "a.b.lync.com") == "skype-allow"
    assert rules.classify_one(6, 50000, 443, 1, 5, "contoso.sharepoint.com") == \
        "sharepoint-optimize"
    assert rules.classify_one(6, 50000, 443, 1, 5, "example.org") == "other"


def test_import_command_writes_loadable_toml(tmp_path: Path) -> None:
    src = write(tmp_path, ENDPOINTS)
    out = tmp_path / "ms.toml"
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "import-endpoints",
                           str(src), "-o", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# Imported from worldwide.json")
    assert load_rules(out).rules == load_endpoints(src).rules


def test_rules_option_takes_the_json(tmp_path: Path, pcaps_dir: Path) -> None:
    src = write(tmp_path, ENDPOINTS)
    proc = subprocess.run([sys.executable, "-m", "classifier", "analyze", "-q", "--format",
                           "json", "--rules", str(src), str(pcaps_dir / "office365-mix.pcap")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["rules"] == "worldwide"
    assert sum(c["packets"] for c in data["categories"].values()) == \
        data["totals"]["packets"]


@pytest.mark.parametrize("doc, message", [
    ({"id": 1}, "expected a JSON array"),
    ([5], "endpoint set #1 is not an object"),
    ([{"id": 3, "urls": ["a.com"], "tcpPorts": "443,70000", "category": "Allow"}],
     "id 3: bad port '70000'"),
    ([{"id": 4, "urls": ["a.com"], "tcpPorts": 443, "category": "Allow"}], "'tcpPorts'"),
    ([{"id": 5, "ips": ["1.2.3.4/8"], "category": "Allow"}], "bad address prefix"),
    ([{"id": 6, "urls": "a.com", "category": "Allow"}], "'urls' must be a list"),
    ([{"id": 7, "urls": ["a.com"], "category": "<b>Urgent"}], "unknown category"),
])
def test_bad_endpoint_lists_are_one_line(tmp_path: Path, doc: Any, message: str) -> None:
    src = write(tmp_path, doc)
    with pytest.raises(RulesError) as info:
        load_endpoints(src)
    assert message in str(info.value) and str(src) in str(info.value)
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "import-endpoints",
                           str(src)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_not_json_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "broken.json"
    src.write_text("[{", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "check", str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("o365-traffic: error: ") and "not valid JSON" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["office365-2015", "teams", "office365-services"])
def test_shipped_rule_sets_check(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "check",
                           str(ROOT / "rules" / f"{name}.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{ROOT / 'rules' / name}.toml: ok: ")


def test_shipped_patterns_and_prefixes_cite_a_source() -> None:
    """Each name and prefix line of the shipped Teams and services sets has a source."""
    for name in ("teams", "office365-services"):
        lines = (ROOT / "rules" / f"{name}.toml").read_text().splitlines()
        inside = False
        for line in lines:
            s = line.strip()
            if s.startswith(("names = [", "addresses = [")):
                inside = True
            elif s == "]":
                inside = False
            elif inside and s:
                assert "#" in s and s.index("#") > 0, (name, line)


def test_default_rule_set_unchanged() -> None:
    """office365-2015.toml stays the seed's table: port rules only, in the seed's order."""
    rules = load_rules()
    assert rules.name == "office365-2015"
    assert [r.name for r in rules.rules] == ["audio", "video", "desktop-sharing", "push",
                                             "https", "http", "smtp", "smtp-relay", "imap",
                                             "pop3s"]
    assert not any(r.conditional for r in rules.rules)


def test_show_prints_every_rule_escaped(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.toml"
    hostile.write_text('name = "h"\n[[rule]]\nname = "[bold red]x[/]"\nprotocols = ["tcp"]\n'
                       'client.tcp = ["any"]\nserver.tcp = [443]\nnames = ["*.evil.example"]\n',
                       encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "show", str(hostile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "[bold red]x[/]" in proc.stdout and "*.evil.example" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "show", "teams"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for rule in load_rules("teams").rules:
        assert rule.name in proc.stdout
    assert "52.112.0.0/14" in proc.stdout and "signature: ms-stun" in proc.stdout


def test_check_reports_the_bad_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "r1"\nprotocols = ["tcp"]\nclient.tcp = ["any"]\n'
                   'server.tcp = [443]\naddresses = ["10.0.0.1/8"]\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "classifier", "rules", "check", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "r1" in proc.stderr and "10.0.0.1/8" in proc.stderr
    assert proc.stderr.count("\n") == 1
