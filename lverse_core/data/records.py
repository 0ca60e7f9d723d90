"""The one schema check of caption-record sources (Karpathy ``dataset_coco.json``, CC3M TSV): every entry, not
just the first, before any record is used.

Each format's reader turns its entries into records ``{"image_id": int, "path": Path, "captions": [str]}`` and
``check_records`` checks them all the same way: integer ids that are unique in the file (two entries with one
id would share one image's codes), captions that are strings, and image paths that stay under the image root
(no absolute paths, no '..': a listed "/etc/passwd" must not become a record). A broken entry is a
``BadInputError`` naming the file and the entry; it does not follow ``data.bad_input``, because the listing
itself is wrong and skipping would hide that (unreadable images and empty captions still follow the policy).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any


class BadInputError(ValueError):
    """An image, caption or listing entry that cannot be used; the message names the file and the problem."""


def entry_error(file: Path | str, entry: str, problem: str) -> BadInputError:
    return BadInputError(f"{file}, {entry}: {problem}; fix that entry of the file")


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true/false",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def expect(file: Path | str, entry: str, tree: dict, key: str, typ: type, default: Any = ...) -> Any:
    """``tree[key]`` if it is a ``typ`` (bool is not an int here), else a BadInputError naming file and entry."""
    if key not in tree:
        if default is not ...:
            return default
        raise entry_error(file, entry, f"missing key '{key}'")
    value = tree[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise entry_error(file, entry, f"'{key}' must be {_type_name(typ())}, got {_type_name(value)} {value!r:.60}")
    return value


def image_path(file: Path | str, entry: str, root: Path, *parts: str) -> Path:
    """``root`` joined with the listed relative path ``parts``; anything that would leave ``root`` is an error."""
    rel = PurePosixPath(*[p.replace("\\", "/") for p in parts if p])  # listings use '/'; '\\' is not a way out
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or ":" in rel.parts[0]:
        raise entry_error(file, entry, f"image path {'/'.join(parts)!r} must be a relative path under the image "
                                       f"root {root} (no leading '/', no '..')")
    return root / rel


def check_records(file: Path | str, records: list[dict], entries: list[str]) -> list[dict]:
    """Check every record of ``file`` (``entries[i]`` names record i in messages); return the records."""
    seen: dict[int, str] = {}
    for rec, entry in zip(records, entries):
        image_id = rec["image_id"]
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id < 0:
            raise entry_error(file, entry, f"image id {image_id!r} must be a non-negative integer")
        if image_id in seen:
            raise entry_error(file, entry, f"image id {image_id} is also the id of {seen[image_id]}; ids must be "
                                           f"unique (each image has its own codes)")
        seen[image_id] = entry
        if not isinstance(rec["captions"], list) or not all(isinstance(c, str) for c in rec["captions"]):
            raise entry_error(file, entry, "captions must be strings")
    return records


__all__ = ["BadInputError", "check_records", "entry_error", "expect", "image_path"]
