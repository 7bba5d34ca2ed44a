"""A site's append-only, hash-chained egress log: one JSON line per message the site sends, verifiable offline."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from common.errors import FedcareError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; one writer per log is then assumed
    fcntl = None  # type: ignore[assignment]

GENESIS_HASH = "0" * 64
ENTRY_FIELDS = frozenset(
    {
        "seq",
        "time",
        "message_type",
        "server_round",
        "tensors",
        "tensor_bytes",
        "metrics",
        "epsilon",
        "error",
        "prev_hash",
        "hash",
    }
)
OPTIONAL_FIELDS = frozenset({"run"})  # the run id the entry answers (entries written since fedcare names them)
TENSOR_FIELDS = frozenset({"name", "shape", "dtype", "sha256"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
# Reading the last line backwards in chunks keeps appends O(1) however long the log grows.
_TAIL_CHUNK = 4096
# A summary lists a few errors; the log itself holds them all.
_MAX_ERRORS_SHOWN = 10


class AuditError(FedcareError, ValueError):
    """An egress log entry cannot be written, or a log on disk fails verification."""


@dataclass(frozen=True)
class TensorEntry:
    """What the log records of one tensor sent: never its values, only enough to identify them.

    Attributes:
        name: The tensor's key in the message (a LoRA parameter name).
        shape: The array's shape.
        dtype: numpy's name for the dtype (``str(a.dtype)``, e.g. ``"float32"``).
        sha256: Hex SHA-256 of the array's C-order raw bytes.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str

    def as_record(self) -> dict[str, Any]:
        """The entry as stored in a log line (shape as a JSON list)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "sha256": self.sha256}


def describe_arrays(arrays: Mapping[str, np.ndarray]) -> list[TensorEntry]:
    """Describe each array by name, shape, dtype and the SHA-256 of its raw bytes, in the mapping's order.

    Args:
        arrays: Tensor name to numpy array, as sent.

    Returns:
        One :class:`TensorEntry` per array.

    Raises:
        AuditError: when a name is not a string, a value is not a numpy array, or its dtype holds Python
            objects (whose raw bytes are pointers, so a hash of them would prove nothing).
    """
    described = []
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise AuditError(f"tensor name {name!r} is not a string")
        if not isinstance(array, np.ndarray):
            raise AuditError(f"tensor {name!r} is a {type(array).__name__}, not a numpy array")
        if array.dtype.hasobject:
            raise AuditError(f"tensor {name!r} has dtype {array.dtype}, which holds Python objects")
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        described.append(TensorEntry(name, tuple(int(d) for d in array.shape), str(array.dtype), digest))
    return described


def canonical_json(obj: Mapping[str, Any]) -> str:
    """The one serialization that is hashed and written: sorted keys, compact separators, ASCII only.

    Args:
        obj: A JSON-serializable mapping without non-finite floats.

    Returns:
        The canonical JSON text.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``entry`` without its ``"hash"`` field.

    Args:
        entry: A log entry, with or without ``"hash"``.

    Returns:
        The hex digest the entry's ``"hash"`` field must hold.
    """
    content = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical_json(content).encode("ascii")).hexdigest()


class EgressLog:
    """Append-only JSON Lines log of every message a site sends, each entry chained to the previous by hash.

    Each append reads only the last line (for the previous hash and sequence number), so appending stays
    O(1); :func:`verify_log` checks the whole chain.
    """

    def __init__(self, path: str | Path) -> None:
        """Prepare a log at ``path``; its parent directories are created, the file on first append.

        Args:
            path: The JSON Lines file.

        Raises:
            OSError: when the parent directory cannot be created.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(
        self,
        *,
        message_type: str,
        server_round: int,
        tensors: Mapping[str, np.ndarray] | None,
        metrics: Mapping[str, float],
        epsilon: float | None,
        error: str | None = None,
        run_id: str | None = None,
    ) -> dict:
        """Record one outgoing message; the entry is on disk (fsynced) when this returns.

        Non-finite metric values and a non-finite epsilon are stored as JSON ``null``: JSON has no
        infinity, and ``inf`` here only ever means "no DP guarantee", which ``null`` says as well.

        Args:
            message_type: What kind of reply this is, e.g. ``"train"`` or ``"evaluate"``.
            server_round: The round the message answers.
            tensors: The arrays sent, by name; ``None`` when the message carries none.
            metrics: The metrics sent; each value must be an int or float (not bool).
            epsilon: The site's epsilon spent so far, or ``None`` when not applicable.
            error: Text fedcare wrote about a refusal (names files and rows, never record text).
            run_id: The run the message answers (stored as ``"run"``); None when unknown (an unreadable plan).

        Returns:
            The entry as written, including ``seq``, ``prev_hash`` and ``hash``.

        Raises:
            AuditError: when an argument is invalid (nothing is written then), or when the log's last
                line is truncated, malformed or does not match its hash.
            OSError: when the file cannot be written; a partly written line is cut off again.
        """
        # Validate everything before touching the file, so a refused entry leaves no trace.
        content = _entry_content(message_type, server_round, tensors, metrics, epsilon, error)
        if run_id is not None:
            if not isinstance(run_id, str) or not run_id:
                raise AuditError("run_id must be a non-empty string or None")
            content["run"] = run_id
        with _locked_append_handle(self.path) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            last = _read_last_entry(handle, size, self.path)
            seq, prev_hash = (1, GENESIS_HASH) if last is None else (last["seq"] + 1, last["hash"])
            entry = {"seq": seq, "time": datetime.now(UTC).isoformat(timespec="microseconds"), **content}
            entry["prev_hash"] = prev_hash
            entry["hash"] = entry_hash(entry)
            line = (canonical_json(entry) + "\n").encode("ascii")
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                # A half-written line would break every later append; restore the last good state.
                try:
                    handle.truncate(size)
                    os.fsync(handle.fileno())
                except OSError:
                    pass
                raise
        if size == 0:
            _fsync_directory(self.path.parent)
        return entry

    def entries(self) -> list[dict]:
        """All entries, after verifying the whole chain.

        Returns:
            The entries in file order; an empty list when the log does not exist yet.

        Raises:
            AuditError: naming the first entry that fails verification.
        """
        if not self.path.exists():
            return []
        return _read_verified(self.path)


def verify_log(path: str | Path, anchors: list[tuple[int, str]] | None = None) -> int:
    """Verify every entry of an egress log: well-formed, unedited, in sequence and chained.

    A chain alone cannot reveal a log rewritten from some entry on, or cut short: ``anchors``, the
    (seq, head hash) pairs the site reported with its replies (recorded in the coordinator's signed
    adapter manifests), can. Each must be an entry of this log with exactly that hash.

    Args:
        path: The JSON Lines log.
        anchors: (seq, hash) pairs recorded outside the site.

    Returns:
        The number of entries.

    Raises:
        AuditError: naming the first bad entry by its 1-based index and line number, and why; or the
            first anchor the log does not hold (truncated, or rewritten).
    """
    entries = _read_verified(Path(path))
    for seq, head in anchors or []:
        if seq > len(entries):
            raise AuditError(
                f"{path}: anchored entry {seq} is missing: the log was truncated to {len(entries)} entries"
            )
        if entries[seq - 1]["hash"] != head:
            raise AuditError(
                f"{path}: entry {seq} does not match the head hash recorded outside the site: the log was rewritten"
            )
    return len(entries)


def summarize(path: str | Path) -> str:
    """A human summary of a verified egress log, for a privacy officer.

    Args:
        path: The JSON Lines log.

    Returns:
        Several lines: entry count, time span, rounds, message types, tensors and bytes sent, metric names,
        the last epsilon, errors sent and the head hash, ending with ``"chain: OK (N entries)"``.

    Raises:
        AuditError: when the log fails verification.
    """
    path = Path(path)
    entries = _read_verified(path)
    lines = [f"egress log: {path}", f"entries: {len(entries)}"]
    if entries:
        first, last = _parse_time(entries[0]["time"]), _parse_time(entries[-1]["time"])
        lines.append(f"time: {entries[0]['time']} .. {entries[-1]['time']} (span {last - first})")
        rounds = sorted({e["server_round"] for e in entries})
        lines.append(f"rounds: {len(rounds)} distinct, {rounds[0]}..{rounds[-1]}")
        types = Counter(e["message_type"] for e in entries)
        lines.append("message types: " + ", ".join(f"{name} x{count}" for name, count in sorted(types.items())))
    else:
        lines += ["time: -", "rounds: none", "message types: none"]
    tensor_count = sum(len(e["tensors"]) for e in entries)
    total_bytes = sum(e["tensor_bytes"] for e in entries)
    names = {t["name"] for e in entries for t in e["tensors"]}
    lines.append(f"tensors sent: {tensor_count} ({len(names)} distinct names)")
    lines.append(f"tensor bytes sent: {total_bytes} ({_mib(total_bytes)})")
    metric_names = sorted({name for e in entries for name in e["metrics"]})
    lines.append("metric names: " + (", ".join(metric_names) if metric_names else "none"))
    with_epsilon = [e for e in entries if e["epsilon"] is not None]
    if with_epsilon:
        e = with_epsilon[-1]
        lines.append(f"last epsilon: {e['epsilon']:.6g} (entry {e['seq']}, round {e['server_round']})")
    else:
        lines.append("last epsilon: none recorded (no entry carries a finite epsilon)")
    errors = [e for e in entries if e["error"] is not None]
    lines.append(f"errors sent: {len(errors) if errors else 'none'}")
    for e in errors[:_MAX_ERRORS_SHOWN]:
        lines.append(f"  entry {e['seq']} (round {e['server_round']}, {e['message_type']}): {e['error']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    # Only a head hash recorded elsewhere can reveal a rewritten tail or a dropped last entry.
    lines.append(f"head hash: {entries[-1]['hash'] if entries else GENESIS_HASH}")
    lines.append(f"chain: OK ({len(entries)} entries)")
    return "\n".join(lines)


def _entry_content(
    message_type: str,
    server_round: int,
    tensors: Mapping[str, np.ndarray] | None,
    metrics: Mapping[str, float],
    epsilon: float | None,
    error: str | None,
) -> dict[str, Any]:
    """The validated fields of a new entry, other than seq, time and the hashes."""
    if not isinstance(message_type, str) or not message_type:
        raise AuditError("message_type must be a non-empty string")
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 0:
        raise AuditError(f"server_round must be a non-negative int, got {type(server_round).__name__}")
    if error is not None and not isinstance(error, str):
        raise AuditError(f"error must be a string or None, got {type(error).__name__}")
    described = describe_arrays(tensors) if tensors is not None else []
    stored_metrics: dict[str, int | float | None] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise AuditError(f"metric name {name!r} is not a string")
        # Never echo the value: a non-number could be anything, including record text.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AuditError(f"metric {name!r} is not a number ({type(value).__name__})")
        stored_metrics[name] = _finite_or_none(value)
    if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))):
        raise AuditError(f"epsilon must be a number or None, got {type(epsilon).__name__}")
    return {
        "message_type": message_type,
        "server_round": server_round,
        "tensors": [t.as_record() for t in described],
        "tensor_bytes": sum(int(a.nbytes) for a in tensors.values()) if tensors is not None else 0,
        "metrics": stored_metrics,
        "epsilon": None if epsilon is None else _finite_or_none(epsilon),
        "error": error,
    }


def _finite_or_none(value: int | float) -> int | float | None:
    if isinstance(value, int):
        return int(value)
    return float(value) if math.isfinite(value) else None


@contextmanager
def _locked_append_handle(path: Path) -> Iterator[IO[bytes]]:
    """The log opened for append (and reading its tail), exclusively locked where the OS allows."""
    with open(path, "a+b") as handle:
        if fcntl is not None:
            # Two writers reading the same last line would both claim the next seq.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable (POSIX only; elsewhere the file's fsync must do)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_last_entry(handle: IO[bytes], size: int, path: Path) -> dict | None:
    """Parse and self-check the last line of the log by reading backwards from its end."""
    if size == 0:
        return None
    handle.seek(size - 1)
    if handle.read(1) != b"\n":
        raise AuditError(f"{path}: cannot append: the last line is truncated (no final newline; a partial write?)")
    # The last line runs from just after the previous newline (or the file's start) to the final newline.
    line = b""
    position = size - 1
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        handle.seek(position - step)
        chunk = handle.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            line = chunk[cut + 1 :] + line
            break
        line = chunk + line
        position -= step
    return _parse_line(line, f"{path}: cannot append: last entry")


def _read_verified(path: Path) -> list[dict]:
    """Every entry of the log, each checked on its own and against the one before it."""
    from common.files import MIB, read_regular

    if not os.path.lexists(path):
        raise AuditError(f"{path}: no egress log at this path")
    data = read_regular(path, "egress log", 256 * MIB, AuditError)  # ~1 KB per message: years of rounds
    if not data:
        return []
    raw_lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        raw_lines.pop()  # the empty string after the final newline
    entries: list[dict] = []
    for index, raw in enumerate(raw_lines, start=1):
        where = f"{path}: entry {index} (line {index})"
        if index == len(raw_lines) and not complete:
            raise AuditError(f"{where}: truncated line (no final newline; a partial write?)")
        entry = _parse_line(raw, where)
        if entry["seq"] != index:
            raise AuditError(f"{where}: expected seq {index}, found {entry['seq']}")
        expected_prev = entries[-1]["hash"] if entries else GENESIS_HASH
        if entry["prev_hash"] != expected_prev:
            previous = f"entry {index - 1}" if entries else "the start of the log"
            raise AuditError(f"{where}: previous-hash does not match {previous}")
        entries.append(entry)
    return entries


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _parse_line(raw: bytes, where: str) -> dict:
    """One line parsed and checked on its own: structure, its own hash, and canonical form."""
    if not raw:
        raise AuditError(f"{where}: empty line")
    try:
        entry = json.loads(raw.decode("ascii"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AuditError(f"{where}: not a valid JSON line (truncated or edited)") from None
    if not isinstance(entry, dict):
        raise AuditError(f"{where}: not a JSON object")
    _check_structure(entry, where)
    if entry_hash(entry) != entry["hash"]:
        raise AuditError(f"{where}: hash does not match its content")
    # Same content, different bytes (spacing, key order, number spelling) still means the file was edited.
    if canonical_json(entry).encode("ascii") != raw:
        raise AuditError(f"{where}: line is not in canonical form (edited?)")
    return entry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_structure(entry: dict, where: str) -> None:
    """Raise unless every field is present with the right type; error text never quotes values."""
    missing, extra = ENTRY_FIELDS - entry.keys(), entry.keys() - ENTRY_FIELDS - OPTIONAL_FIELDS
    if missing:
        raise AuditError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
    if extra:
        raise AuditError(f"{where}: unexpected field(s) {', '.join(sorted(extra))}")
    if not _is_int(entry["seq"]) or entry["seq"] < 1:
        raise AuditError(f"{where}: seq is not a positive integer")
    if "run" in entry and (not isinstance(entry["run"], str) or not entry["run"]):
        raise AuditError(f"{where}: run is not a non-empty string")
    if not isinstance(entry["time"], str):
        raise AuditError(f"{where}: time is not an ISO-8601 UTC timestamp")
    try:
        _parse_time(entry["time"])
    except ValueError:
        raise AuditError(f"{where}: time is not an ISO-8601 UTC timestamp") from None
    if not isinstance(entry["message_type"], str) or not entry["message_type"]:
        raise AuditError(f"{where}: message_type is not a non-empty string")
    if not _is_int(entry["server_round"]) or entry["server_round"] < 0:
        raise AuditError(f"{where}: server_round is not a non-negative integer")
    if not isinstance(entry["tensors"], list):
        raise AuditError(f"{where}: tensors is not a list")
    expected_bytes = sum(_check_tensor(t, f"{where}: tensor {i}") for i, t in enumerate(entry["tensors"], start=1))
    if not _is_int(entry["tensor_bytes"]) or entry["tensor_bytes"] != expected_bytes:
        raise AuditError(f"{where}: tensor_bytes does not equal the sum over its tensors ({expected_bytes})")
    if not isinstance(entry["metrics"], dict):
        raise AuditError(f"{where}: metrics is not an object")
    for name, value in entry["metrics"].items():
        if value is not None and not _is_number(value):
            raise AuditError(f"{where}: metric {name!r} is not a number")
    if entry["epsilon"] is not None and not _is_number(entry["epsilon"]):
        raise AuditError(f"{where}: epsilon is not a number or null")
    if entry["error"] is not None and not isinstance(entry["error"], str):
        raise AuditError(f"{where}: error is not a string or null")
    for key in ("prev_hash", "hash"):
        if not isinstance(entry[key], str) or not _HEX64.fullmatch(entry[key]):
            raise AuditError(f"{where}: {key} is not 64 lowercase hex digits")


def _check_tensor(record: object, where: str) -> int:
    """Raise unless ``record`` is a complete tensor record; return the bytes it stands for."""
    if not isinstance(record, dict):
        raise AuditError(f"{where}: not an object")
    missing, extra = TENSOR_FIELDS - record.keys(), record.keys() - TENSOR_FIELDS
    if missing:
        raise AuditError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
    if extra:
        raise AuditError(f"{where}: unexpected field(s) {', '.join(sorted(extra))}")
    if not isinstance(record["name"], str):
        raise AuditError(f"{where}: name is not a string")
    shape = record["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise AuditError(f"{where}: shape is not a list of non-negative integers")
    try:
        dtype = np.dtype(record["dtype"]) if isinstance(record["dtype"], str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.hasobject:
        raise AuditError(f"{where}: dtype is not a numpy dtype name")
    if not isinstance(record["sha256"], str) or not _HEX64.fullmatch(record["sha256"]):
        raise AuditError(f"{where}: sha256 is not 64 lowercase hex digits")
    return math.prod(shape) * dtype.itemsize


def _parse_time(text: str) -> datetime:
    """Parse an entry's time; raise ValueError unless it is ISO-8601 with a zero UTC offset."""
    moment = datetime.fromisoformat(text)
    offset = moment.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError("not UTC")
    return moment


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB"
