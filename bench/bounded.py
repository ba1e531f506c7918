"""Reading files that someone else may have written, within bounds: suite files, the JSON files of output folders and
bundles, samples.npz.

A suite file may include another, and a shared results folder may hold anything. So every reader here first checks
that the path is a regular file (a folder, a FIFO or a device such as /dev/zero is refused before it is opened for
reading, and checked again on the open file), reads at most its limit and one byte more, and refuses a file over the
limit; a parser is bounded too (YAML: nesting and aliases; JSON: nesting; npz: each array's declared size). An error
is an `UnreadableFile`, a `ConfigError` whose one line names the file and what is wrong or which limit it exceeds,
never the file's content.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import yaml

from bench.errors import ConfigError

#: a suite file, or a file it includes
MAX_SUITE_BYTES = 2**20
#: nesting of a suite's mappings and lists (its aliases expanded): a suite needs fewer than 10 levels
MAX_YAML_DEPTH = 50
#: nodes (mappings, lists, values) of one YAML document, each alias counted as a copy of what it names
MAX_YAML_NODES = 50_000
#: a JSON file of an output folder or bundle (suite.json, spec.json, result.json, manifest.json, references.json)
MAX_JSON_BYTES = 64 * 2**20
#: nesting of such a JSON file: they need fewer than 10 levels
MAX_JSON_DEPTH = 100
#: a samples.npz: its size on disk and its arrays' declared sizes, uncompressed, together
MAX_SAMPLES_BYTES = 64 * 2**20


class UnreadableFile(ConfigError):
    """A file that cannot be read as what it should be: ``PATH: reason``, one line; `reason` alone is the words
    after the path, for a caller that names the file its own way."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def size_text(count: int) -> str:
    """``1 MiB`` for 2**20 bytes, else the bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


@contextlib.contextmanager
def open_regular(path: str | Path, limit: int, what: str) -> Iterator[BinaryIO]:
    """`path` opened for reading in binary, once it is known to be a regular file of at most `limit` bytes; `what`
    names the kind of file in the error (``a suite file``). A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UnreadableFile(path, f"is {_kind(mode)}, not {what}")
    # non-blocking: should the path have become a FIFO since the stat, opening it does not wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise UnreadableFile(path, f"is {_kind(opened.st_mode)}, not {what}")
        if opened.st_size > limit:
            raise _too_large(path, limit, what)
        yield handle


def read_bytes(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file `path`, refused over `limit` (also when it grows while being read)."""
    with open_regular(path, limit, what) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_large(path, limit, what)
    return data


def _too_large(path: str | Path, limit: int, what: str) -> UnreadableFile:
    return UnreadableFile(path, f"larger than {size_text(limit)}, the limit for {what}")


def read_text(path: str | Path, limit: int, what: str) -> str:
    """`read_bytes` decoded as UTF-8."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"not UTF-8 text (at byte {error.start})") from None


# ---- JSON -----------------------------------------------------------------------------------------------------------

def read_json(path: str | Path) -> Any:
    """A JSON file of an output folder or bundle, within `MAX_JSON_BYTES` and `MAX_JSON_DEPTH`."""
    text = read_text(path, MAX_JSON_BYTES, "a JSON file")
    too_deep = f"nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableFile(path, f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") \
            from None
    except RecursionError:
        raise UnreadableFile(path, too_deep) from None
    if _deeper_than(data, MAX_JSON_DEPTH):
        raise UnreadableFile(path, too_deep)
    return data


def read_json_object(path: str | Path) -> dict[str, Any]:
    """`read_json` of a file that must hold a JSON object ({...})."""
    data = read_json(path)
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(data),
                                                                                                 "a number")
        raise UnreadableFile(path, f"not a JSON object ({kind} instead)")
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


# ---- YAML -----------------------------------------------------------------------------------------------------------

class RefusedYAML(yaml.YAMLError):
    """YAML that parses but is refused; the message says where and why, never the content."""


class DuplicateKeyError(RefusedYAML):
    """A mapping that names the same key twice; `line` and `first` are 1-based line numbers."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first})")
        self.key, self.line, self.first = key, line, first


class YAMLLimitError(RefusedYAML):
    """A document nested more than `MAX_YAML_DEPTH` levels, of more than `MAX_YAML_NODES` nodes once its aliases are
    expanded, or with an alias inside what it names."""


class StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a mapping with the same key twice is an error (PyYAML keeps the last one,
    so a second `train:` block would silently replace the first), and that a document is refused beyond
    `MAX_YAML_DEPTH` levels or `MAX_YAML_NODES` nodes, aliases expanded ("billion laughs"), before it is built."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth, self.nodes = 0, 0

    def compose_node(self, parent, index):
        line = self.peek_event().start_mark.line + 1
        self.nodes += 1
        if self.depth >= MAX_YAML_DEPTH:  # checked while composing, which recurses once per level
            raise YAMLLimitError(f"line {line}: nested more than {MAX_YAML_DEPTH} levels deep")
        if self.nodes > MAX_YAML_NODES:
            raise YAMLLimitError(f"line {line}: more than {MAX_YAML_NODES} values")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expanded(node)
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError):  # a date that does not exist, an integer of more digits than int() reads
            raise yaml.constructor.ConstructorError(None, None, "a value that cannot be read (a date that does not "
                                                    "exist, or a number of too many digits)", node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges another mapping; its keys may be replaced
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    continue  # the normal construction reports an unhashable key
                line = key_node.start_mark.line + 1
                if key in first_lines:
                    raise DuplicateKeyError(key, line, first_lines[key])
                first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_expanded(root: yaml.Node) -> None:
    """Refuse a composed document whose tree, each alias replaced by a copy of what it names, is deeper than
    `MAX_YAML_DEPTH` or has more than `MAX_YAML_NODES` nodes: later steps (merging, checking, writing suite.json,
    an error message) walk that tree. Each node is measured once, so a few hundred bytes of nested aliases cost a
    few hundred steps here, not 10⁹."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes below and including it, levels below it)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        line = node.start_mark.line + 1
        known = measured.get(id(node))
        if known is not None:
            if depth + known[1] > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"line {line}: nested more than {MAX_YAML_DEPTH} levels deep once its aliases "
                                     "are expanded")
            return known
        if id(node) in open_nodes:
            raise YAMLLimitError(f"line {line}: an alias inside the node it names")
        if depth > MAX_YAML_DEPTH:
            raise YAMLLimitError(f"line {line}: nested more than {MAX_YAML_DEPTH} levels deep once its aliases are "
                                 "expanded")
        children = [] if isinstance(node, yaml.ScalarNode) else \
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
        open_nodes.add(id(node))
        count, height = 1, 0
        for child in children:
            nodes, levels = measure(child, depth + 1)
            count, height = count + nodes, max(height, levels + 1)
            if count > MAX_YAML_NODES:
                raise YAMLLimitError(f"line {line}: more than {MAX_YAML_NODES} values once its aliases are expanded")
        open_nodes.discard(id(node))
        measured[id(node)] = (count, height)
        return count, height

    measure(root, 1)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` within the limits of `StrictLoader`; raises `DuplicateKeyError`, `YAMLLimitError` or
    another `yaml.YAMLError`."""
    return yaml.load(text, Loader=StrictLoader)  # safe: StrictLoader is a SafeLoader


_QUOTED = re.compile(r"\s*('[^'<][^']*'|\"[^\"]*\")")


def yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, and where (line, column), in words that quote nothing of it: PyYAML's
    messages quote the offending text (an alias, a tag, a character), and its context lines show whole lines."""
    if isinstance(error, RefusedYAML):
        return str(error)
    if isinstance(error, yaml.reader.ReaderError):
        return f"a character YAML does not allow, at character {error.position + 1}"
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or (str(error).splitlines() or [""])[0]
    problem = _QUOTED.sub("", problem).strip()
    return f"YAML syntax error{where}" + (f": {problem}" if problem else "")


def read_yaml(path: str | Path) -> Any:
    """A suite file's YAML: a regular file of at most `MAX_SUITE_BYTES`, UTF-8, within `StrictLoader`'s limits.
    Raises `UnreadableFile` (FileNotFoundError for a missing file); a duplicate key's reason keeps the key, which
    `DuplicateKeyError` (the `__cause__`) also holds."""
    text = read_text(path, MAX_SUITE_BYTES, "a suite file")
    try:
        return load_yaml(text)
    except yaml.YAMLError as error:
        raise UnreadableFile(path, yaml_problem(error)) from error


# ---- npz ------------------------------------------------------------------------------------------------------------

def read_npz(path: str | Path, names: re.Pattern, limit: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (no pickles), by name. The file must be at most `limit` bytes (default
    `MAX_SAMPLES_BYTES`), hold only arrays whose names match `names`, and declare at most `limit` bytes of them
    uncompressed (the zip's sizes, and each array's shape in its header), all checked before any array is read."""
    what, limit = "a samples file", MAX_SAMPLES_BYTES if limit is None else limit
    with open_regular(path, limit, what) as handle:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            if any(not info.filename.endswith(".npy") or not names.fullmatch(info.filename[:-4]) for info in infos):
                raise UnreadableFile(path, f"holds an array of a name not in {what}")
            if sum(info.file_size for info in infos) > limit:
                raise UnreadableFile(path, f"its arrays are larger than {size_text(limit)}, the limit for {what}")
            for info in infos:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise UnreadableFile(path, f"an array in a format version {version} it does not read")
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = header(member)
                    stored = info.file_size - member.tell()  # the bytes after the header
                if dtype.hasobject or math.prod(shape) * dtype.itemsize > stored:
                    raise UnreadableFile(path, "an array larger than its stored size, or of Python objects")
        handle.seek(0)
        with np.load(handle, mmap_mode=None, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
