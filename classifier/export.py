"""Flow records and time series as Parquet (pyarrow) or CSV, chosen by file extension.

Columns are named and typed so that pandas, polars and DuckDB read them as they are:
timestamps are UTC (Parquet ``timestamp[ns, UTC]``; CSV: seconds since the epoch),
counts are 64-bit integers, names are strings.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import O365TrafficError
from .flows import FLOW_COLUMNS, N_STATS, Flows, flow_columns
from .measures import DIRECTIONS
from .result import AnalysisResult

__all__ = ["FlowWriter", "OutputError", "write_series"]

SERIES_COLUMNS = ("interval_start", "category", "direction", "packets", "bytes",
                  "active_flows")


class OutputError(O365TrafficError):
    """An output file cannot be written."""


def _kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise OutputError(f"{path}: unknown output format (use .parquet or .csv)")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise OutputError(
            "Parquet output needs pyarrow: pip install 'o365-traffic[parquet]'") from None
    return pyarrow


class FlowWriter:
    """Writes flow records as they come (evicted chunks, then the rest): memory stays
    bounded whatever the number of flows."""

    def __init__(self, path: str, categories: tuple[str, ...]) -> None:
        self.path = path
        self.categories = categories
        self.kind = _kind(path)
        self.rows = 0
        self._writer: Any = None
        self._fh: IO[str] | None = None
        self._csv: Any = None
        if self.kind == "parquet":
            _pyarrow()
        try:
            if self.kind == "csv":
                self._fh = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
                self._csv = csv.writer(self._fh)
                self._csv.writerow(FLOW_COLUMNS)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def __call__(self, flows: Flows) -> None:
        if not len(flows):
            return
        cols = flow_columns(flows, self.categories)
        self.rows += len(flows)
        try:
            if self.kind == "csv":
                assert self._csv is not None
                self._csv.writerows(zip(*(cols[c] for c in FLOW_COLUMNS), strict=True))
                return
            pa = _pyarrow()
            table = pa.table({
                "protocol": pa.array(cols["protocol"], pa.uint8()),
                "client_addr": pa.array(cols["client_addr"], pa.string()),
                "client_port": pa.array(cols["client_port"], pa.uint16()),
                "server_addr": pa.array(cols["server_addr"], pa.string()),
                "server_port": pa.array(cols["server_port"], pa.uint16()),
                "category": pa.array(cols["category"], pa.string()),
                "first_ts": pa.array(flows.stats[:, 0], pa.timestamp("ns", tz="UTC")),
                "last_ts": pa.array(flows.stats[:, 1], pa.timestamp("ns", tz="UTC")),
                "packets_up": pa.array(cols["packets_up"], pa.int64()),
                "bytes_up": pa.array(cols["bytes_up"], pa.int64()),
                "packets_down": pa.array(cols["packets_down"], pa.int64()),
                "bytes_down": pa.array(cols["bytes_down"], pa.int64()),
                "dscp": pa.array(cols["dscp"], pa.string()),
                "server_name": pa.array(cols["server_name"], pa.string()),
            })
            if self._writer is None:
                self._writer = pa.parquet.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self.kind == "csv" and self._fh is not None:
            self._fh.close()
        elif self.kind == "parquet":
            if self._writer is None:  # no flows at all: still a valid, empty file
                self(Flows(np.zeros((0, 6), np.int64), np.zeros((0, N_STATS), np.int64),
                           np.zeros((0, 4), np.int8), np.zeros((0, 4), np.int64)))
                if self._writer is None:
                    pa = _pyarrow()
                    schema = pa.schema([(c, pa.string()) for c in FLOW_COLUMNS])
                    self._writer = pa.parquet.ParquetWriter(self.path, schema)
            self._writer.close()


def write_series(path: str, result: AnalysisResult) -> None:
    """The time series in long form: one row per interval (that saw packets),
    category and direction."""
    kind = _kind(path)
    s = result.series
    names = result.category_names
    start: list[int] = []
    cats: list[str] = []
    dirs: list[str] = []
    packets: list[int] = []
    nbytes: list[int] = []
    active: list[int] = []
    if s is not None:
        bins, rows = s.ordered()
        for b, row in zip(bins.tolist(), rows.tolist(), strict=True):
            t = b * s.interval_ns
            for i, c in enumerate(names):
                for j, d in enumerate(DIRECTIONS):
                    start.append(t)
                    cats.append(c)
                    dirs.append(d)
                    packets.append(int(s.packets[row, i, j]))
                    nbytes.append(int(s.bytes[row, i, j]))
                    active.append(int(s.active[row, i]))
    try:
        if kind == "csv":
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(SERIES_COLUMNS)
                w.writerows(zip([t / 1e9 for t in start], cats, dirs, packets, nbytes, active,
                                strict=True))
            return
        pa = _pyarrow()
        table = pa.table({
            "interval_start": pa.array(start, pa.timestamp("ns", tz="UTC")),
            "category": pa.array(cats, pa.string()),
            "direction": pa.array(dirs, pa.string()),
            "packets": pa.array(packets, pa.int64()),
            "bytes": pa.array(nbytes, pa.int64()),
            "active_flows": pa.array(active, pa.int64()),
        })
        pa.parquet.write_table(table, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
