"""Run the fuzzing harnesses for a set time, keep what they find, and report.

    python fuzz/run.py --seconds 300                  # each harness for 300 s
    python fuzz/run.py --seconds 600 --only capture   # one harness
    python fuzz/run.py --replay                       # re-check the corpora, no fuzzing

For each harness the working corpus grows in ``fuzz/work/<name>/corpus`` (seeded from
``fuzz/corpus/<name>``). A failure stops libFuzzer; its input is copied to
``fuzz/regressions/<name>/`` and the harness restarts with the failure's signature
marked as known (``fuzz/work/<name>/known.txt``), so that one run collects distinct
findings, not one. Hangs (``-timeout``) and memory blow-ups (``-rss_limit_mb``) are
findings too.

After fuzzing, the corpus is replayed without instrumentation: every input through
the interpreted and the compiled kernels, which must agree, and (``--lines``) line
coverage of ``classifier/`` is measured. The figures go to
``fuzz/work/<name>/report.json`` and are printed.
"""

from __future__ import annotations

import argparse
import dis
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz._harness import MARK  # noqa: E402

HARNESSES = {
    "capture": {"script": "fuzz_capture.py", "dict": "capture.dict", "max_len": 4096},
    "rules": {"script": "fuzz_rules.py", "dict": "rules.dict", "max_len": 4096},
}
#: Seconds one input may take before it counts as a hang.
TIMEOUT = 10
#: Peak resident memory (MB) of the fuzzing process that counts as a blow-up.
RSS_LIMIT_MB = 2048

_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Report:
    """What one harness run did."""

    harness: str
    seconds: float = 0.0
    executions: int = 0
    restarts: int = 0
    cov: int = 0  # libFuzzer's coverage counters (Python branch edges seen)
    features: int = 0  # libFuzzer's features (edges with hit-count buckets, comparisons)
    corpus: int = 0
    findings: list[dict[str, str]] = field(default_factory=list)
    replay: dict[str, object] = field(default_factory=dict)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def fuzz(name: str, seconds: float, *, jobs_env: dict[str, str]) -> Report:
    """Run harness ``name`` for ``seconds``, restarting after each finding."""
    spec = HARNESSES[name]
    work = HERE / "work" / name
    corpus = work / "corpus"
    artifacts = work / "artifacts"
    for d in (corpus, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    known = work / "known.txt"
    known.touch()
    report = Report(name)
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    log_path = work / "fuzz.log"
    with open(log_path, "w", encoding="utf-8") as log:
        while (left := deadline - time.monotonic()) > 5:
            cmd = [
                sys.executable, str(HERE / str(spec["script"])),
                f"-max_total_time={int(left)}", f"-timeout={TIMEOUT}",
                f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={spec['max_len']}",
                f"-dict={HERE / str(spec['dict'])}", "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/", str(corpus), str(HERE / "corpus" / name),
            ]
            env = {**os.environ, **jobs_env, "FUZZ_KNOWN": str(known)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                                  cwd=ROOT)
            log.write(proc.stdout + proc.stderr)
            log.flush()
            out = proc.stderr + proc.stdout
            for m in _EXECS.finditer(out):
                report.executions += int(m.group(1))
            for line in out.splitlines():
                s = _STATUS.match(line)
                if s:
                    report.cov = max(report.cov, int(s.group(3)))
                    report.features = max(report.features, int(s.group(4)))
            artifact = _ARTIFACT.search(out)
            if artifact is None:
                if proc.returncode != 0 and "DONE" not in out:
                    print(out[-3000:], file=sys.stderr)
                    raise SystemExit(f"{name}: the harness failed (exit {proc.returncode})")
                break
            report.restarts += 1
            report.findings.append(record_finding(name, out, Path(artifact.group(1)), known))
    report.seconds = round(time.monotonic() - started, 1)
    report.corpus = sum(1 for _ in corpus.iterdir())
    return report


def record_finding(name: str, out: str, artifact: Path, known: Path) -> dict[str, str]:
    """Keep a failing input in fuzz/regressions/ and mark its signature as known."""
    sig_line = next((line for line in out.splitlines() if line.startswith(MARK)), None)
    if sig_line is not None:
        sig = sig_line[len(MARK):].strip()
    elif "ALARM: working on the last Unit" in out or artifact.name.startswith("timeout-"):
        sig = "hang"
    elif "out-of-memory" in out or artifact.name.startswith("oom-"):
        sig = "out-of-memory"
    else:
        sig = "crash"
    with open(known, "a", encoding="utf-8") as fh:
        fh.write(sig + "\n")
    data = artifact.read_bytes()
    digest = hashlib.sha1(data).hexdigest()[:10]
    dest = HERE / "regressions" / name / f"{slug(sig)}-{digest}.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, dest)
    tail = out[out.find("Traceback"):] if "Traceback" in out else out[-1500:]
    print(f"[{name}] finding {sig}: {dest.relative_to(ROOT)}", flush=True)
    return {"signature": sig, "input": str(dest.relative_to(ROOT)), "traceback": tail[:3000]}


# ---- replay: differential and line coverage ------------------------------------------


def _code_lines(code: types.CodeType) -> Iterator[tuple[str, int]]:
    for _, line in dis.findlinestarts(code):
        if line is not None:
            yield code.co_filename, line
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_lines(const)


def executable_lines(package: Path) -> set[tuple[str, int]]:
    """Every line of ``package``'s modules that starts bytecode (def/class bodies too)."""
    lines: set[tuple[str, int]] = set()
    for path in package.rglob("*.py"):
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        lines.update(_code_lines(code))
    return lines


def replay(name: str, inputs: list[Path], *, lines: bool) -> dict[str, object]:
    """Re-check ``inputs`` uninstrumented: the oracles, compiled against interpreted,
    and (``lines``) which lines of classifier/ they reach."""
    from classifier.lookup import compile_rules
    from classifier.rules import load_rules
    from fuzz.checks import check_modes_agree, check_rules_bytes, signature

    rules = compile_rules(load_rules())
    tmp = Path(tempfile.mkdtemp(prefix=f"fuzz-replay-{name}-"))
    failures: dict[str, str] = {}
    seen: set[tuple[str, int]] = set()
    package = str(ROOT / "classifier")

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(package):
            return None
        seen.add((frame.f_code.co_filename, frame.f_lineno))

        def local(frame: types.FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                seen.add((frame.f_code.co_filename, frame.f_lineno))
            return local

        return local

    for path in inputs:
        if lines:
            sys.settrace(tracer)
        try:
            if name == "capture":
                check_modes_agree(str(path), rules)
            else:
                check_rules_bytes(path.read_bytes(), tmp)
        except Exception as exc:
            if name == "rules" and type(exc).__name__ == "RulesError":
                continue
            sig = signature(exc)
            failures.setdefault(sig, str(path.relative_to(ROOT)))
        finally:
            sys.settrace(None)
    out: dict[str, object] = {"inputs": len(inputs), "failures": failures}
    if lines:
        wanted = executable_lines(ROOT / "classifier")
        per_file: dict[str, str] = {}
        for file in sorted({f for f, _ in wanted}):
            total = {x for x in wanted if x[0] == file}
            hit = total & seen
            rel = str(Path(file).relative_to(ROOT))
            if hit:
                per_file[rel] = f"{len(hit)}/{len(total)} ({100 * len(hit) / len(total):.0f}%)"
        out["line_coverage"] = per_file
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300, help="per harness (300)")
    parser.add_argument("--only", choices=sorted(HARNESSES), action="append",
                        help="run only this harness (repeatable)")
    parser.add_argument("--replay", action="store_true",
                        help="no fuzzing: replay the corpora (seeds and work) only")
    parser.add_argument("--lines", action="store_true",
                        help="measure line coverage of classifier/ when replaying")
    parser.add_argument("--parallel", action="store_true",
                        help="run the harnesses at the same time (one core each)")
    args = parser.parse_args(argv)
    names = args.only or sorted(HARNESSES)
    reports: dict[str, Report] = {}
    if not args.replay:
        if args.parallel and len(names) > 1:
            procs = {
                n: subprocess.Popen([sys.executable, __file__, "--seconds", str(args.seconds),
                                     "--only", n, *(["--lines"] if args.lines else [])],
                                    cwd=ROOT)
                for n in names
            }
            for p in procs.values():
                p.wait()
            return
        for n in names:
            reports[n] = fuzz(n, args.seconds, jobs_env={})
    for n in names:
        rep = reports.setdefault(n, Report(n))
        inputs = sorted(p for d in (HERE / "corpus" / n, HERE / "work" / n / "corpus")
                        if d.is_dir() for p in d.iterdir() if p.is_file())
        rep.replay = replay(n, inputs, lines=args.lines)
        if not args.replay:
            (HERE / "work" / n / "report.json").write_text(
                json.dumps(asdict(rep), indent=2) + "\n", encoding="utf-8")
        summary = asdict(rep)
        for f in summary["findings"]:
            f.pop("traceback", None)
        print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
