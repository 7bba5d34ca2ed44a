"""Loading a user's YAML file (site.yaml) safely: no aliases, bounded nesting and size, no duplicate keys.

``yaml.safe_load`` expands aliases, so a few hundred bytes of nested ``*a`` references (a "billion
laughs" file) become gigabytes; it also takes the last of two equal keys silently. A site
configuration needs neither aliases nor depth, so both are refused with the file and line named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError, printable
from common.files import SMALL_FILE_BYTES, read_regular

MAX_DEPTH = 16  # nesting of mappings and lists; site.yaml needs 3


class _Refused(yaml.YAMLError):
    def __init__(self, reason: str, mark: Any) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, (mark.line + 1 if mark is not None else None)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data only) that refuses anchors, aliases, deep nesting and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(
                "YAML anchors and aliases (&name, *name) are not accepted; write the values out", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # a list or mapping as a key
                raise _Refused("a key must be a plain name, not a list or mapping", key_node.start_mark) from None
            if duplicate:
                raise _Refused(f"key {printable(key)!r} appears twice", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a small YAML file that must hold one mapping.

    Args:
        path: The file (a regular file of at most 1 MiB).
        what: What it is, for messages ("site configuration").

    Raises:
        ConfigError: The file is missing, not a regular file, too large, not UTF-8, not YAML, uses
            anchors/aliases, nests too deeply, repeats a key, or is not a mapping. The message names
            the file and line and never quotes the file's values.
    """
    name = printable(path)
    data = read_regular(path, what, SMALL_FILE_BYTES, ConfigError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: the {what} is not UTF-8 text") from None
    loader = None
    try:
        loader = _StrictLoader(text)
        raw = loader.get_single_data()
    except _Refused as err:
        raise ConfigError(f"{name} line {err.line}: {err.reason}") from None
    except yaml.MarkedYAMLError as err:
        line = f" line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
        # PyYAML's "problem" is fixed wording ("expected ',' or ']'"); its context may quote the file.
        raise ConfigError(f"{name}{line}: not valid YAML ({err.problem or type(err).__name__})") from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(f"{name}: not valid YAML (character {err.position + 1} is not allowed in YAML)") from None
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise ConfigError(f"{name}: not valid YAML ({type(err).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping (key: value lines) at the top level")
    return raw
