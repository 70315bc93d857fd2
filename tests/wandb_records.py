"""Read back an offline W&B run (`run-*.wandb`) without the network, for tests.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB
blocks of chunks, each with a 7-byte header (crc32, length, type: full, first, middle, last).
Each reassembled payload is a serialised `wandb_internal_pb2.Record`.
"""

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FILE_HEADER, CHUNK_HEADER = 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path, wait_s: float = 30.0) -> list[pb.Record]:
    """All records, once the run's exit record is written: W&B's service process writes the file
    asynchronously, so right after `finish()` the last records may still be on their way."""
    deadline = time.monotonic() + wait_s
    while True:
        records = _parse(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _parse(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B datastore file"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer: padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history_rows(records: list[pb.Record]) -> list[dict[str, str]]:
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def summary(records: list[pb.Record]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            out.update({item.key or "/".join(item.nested_key): item.value_json for item in r.summary.update})
    return out


def config(records: list[pb.Record]) -> dict[str, str]:
    """The run's config: sent with the run record, later changes as config records."""
    out: dict[str, str] = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        updates = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        out.update({item.key or "/".join(item.nested_key): item.value_json for item in updates})
    return out


def run_id(records: list[pb.Record]) -> str:
    return next(r.run.run_id for r in records if r.WhichOneof("record_type") == "run")


def run_record(records: list[pb.Record]) -> pb.RunRecord:
    """The run's own record: its id, group, job type and name."""
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


def runs_by_job_type(folder: Path) -> dict[str, list[tuple[Path, list[pb.Record]]]]:
    """Every offline W&B run under `<folder>/wandb` as (its .wandb file, its records), by job type (fsa:
    the variant), in the order of the files' names (their start time)."""
    found: dict[str, list[tuple[Path, list[pb.Record]]]] = {}
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        records = read_records(path)
        found.setdefault(run_record(records).job_type, []).append((path, records))
    return found


def logged_table(path: Path, records: list[pb.Record], key: str) -> dict[str, list]:
    """A wandb.Table logged under `key`, as {"columns": [...], "data": [[...], ...]}; `path` is the
    run's `.wandb` file (the table's JSON lies in the files/ folder beside it)."""
    import json

    (where,) = [json.loads(row[f"{key}/path"]) for row in history_rows(records) if f"{key}/path" in row]
    return json.loads((path.parent / "files" / where).read_text())
