"""Reading a skill or tool bundle from disk: the scanner's only I/O, and bounded.

A bundle is hostile input until it is scanned, so reading it must not be a way in:

- nothing is ever extracted: archive members are read into memory, each up to
  ``Limits.max_file_bytes`` (a larger file is skipped with a note after a look at its first
  bytes, which tell text from binary), and the scan stops reading at ``max_total_bytes``;
  a binary file costs only its first bytes (its kind is all the rules need);
- a zip's central directory is sized from its end record before :mod:`zipfile` parses it
  (too many members: it is not parsed at all); a member whose declared sizes make a bomb is
  not opened, and every member is streamed through a meter that stops at the caps whatever
  its header says;
- a tar is streamed (``r|``) through a decompressor whose output is metered, so a gzip bomb
  costs at most ``max_expanded_bytes`` of decompression;
- in a folder no symbolic link is followed (one that points out of the bundle is an
  anomaly), and a file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked to be a
  regular file after opening, so a FIFO cannot block the scan (a parent directory swapped
  for a link while the scan runs is out of scope: that attacker already owns the machine);
- member names with ``..`` or an absolute path, link members, special files, duplicates and
  encrypted members are reported as :class:`Anomaly` (policy decides what they cost).

Where the reader can choose the order (folders, zips) manifests, instructions and scripts
come first, smallest first, so padding a bundle with junk cannot push a payload past the caps.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gzip
import lzma
import os
import re
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal, Protocol, cast

from costwarden.core.errors import InvalidInput

BundleKind = Literal["folder", "zip", "tar", "file"]
AnomalyKind = Literal[
    "symlink_escape", "link_member", "path_traversal", "special_file", "bomb",
    "size_mismatch", "duplicate", "encrypted",
]  # fmt: skip
NoteKind = Literal[
    "too_large", "binary", "invalid_utf8", "unreadable", "symlink", "skipped_dir", "capped",
    "corrupt",
]  # fmt: skip
Magic = Literal["elf", "pe", "macho", "archive", "other"]
Cap = Literal["total_bytes", "members", "expanded", "time", "depth"]

Progress = Callable[[int, int | None, str], None]
"""Called after each file: (files done, files planned or None when unknown, path)."""

_MIB = 1024 * 1024
_HEAD = 8192  # bytes that tell text from binary
_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The caps on one scan. A skill bundle is kilobytes of text: the defaults leave room for
    a vendored tool, and keep a hostile bundle's cost to seconds and a few MiB (the text
    rules cost about 0.3 s a MiB of text dense with their keywords). A bundle with more
    than ``max_total_bytes`` of text is scanned in part and reported incomplete."""

    max_file_bytes: int = 2 * _MIB  # a larger file is skipped (with a note)
    max_total_bytes: int = 4 * _MIB  # bytes of file content read, all files together
    max_members: int = 10_000  # files, folders and links
    max_expanded_bytes: int = 64 * _MIB  # decompressed bytes a tar stream may yield
    max_ratio: float = 100.0  # decompressed / compressed, for anything over ratio_floor
    ratio_floor_bytes: int = _MIB
    max_declared_bytes: int = 1024 * _MIB  # a zip's declared sizes, all members together
    max_seconds: float = 30.0
    max_depth: int = 64  # folder nesting

    def __post_init__(self) -> None:
        if min(self.max_file_bytes, self.max_total_bytes, self.max_members) < 1:
            raise InvalidInput("bundle limits must be positive")
        if not self.max_ratio > 1 or not self.max_seconds > 0:
            raise InvalidInput("max_ratio must be over 1 and max_seconds over 0")


@dataclasses.dataclass(frozen=True, slots=True)
class TextFile:
    path: str  # inside the bundle, '/'-separated, printable (see printable())
    text: str
    size: int
    executable: bool
    replaced: bool = False  # invalid UTF-8 decoded with U+FFFD


@dataclasses.dataclass(frozen=True, slots=True)
class BinaryFile:
    path: str
    size: int
    magic: Magic
    executable: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Anomaly:
    """Something about the bundle's structure that is a finding in itself."""

    kind: AnomalyKind
    path: str
    detail: str
    outside: bool = False  # a link or path that leaves the bundle


@dataclasses.dataclass(frozen=True, slots=True)
class Note:
    """Something the report should say that costs nothing by itself."""

    kind: NoteKind
    path: str
    detail: str


Item = TextFile | BinaryFile | Anomaly | Note


@dataclasses.dataclass(slots=True)
class ReadStats:
    members: int = 0  # entries seen: files, folders, links
    files_read: int = 0  # text files read whole
    bytes_read: int = 0  # content bytes read, heads of binaries included
    expanded_bytes: int = 0  # decompressed bytes (tar streams)
    unscanned_text: int = 0  # text files skipped: too large, unreadable, encrypted
    not_read: int = 0  # files left when a cap stopped the scan
    caps: list[Cap] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.caps and not self.unscanned_text


class _Stream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Capped(Exception):
    """A metered stream reached its cap."""


class _Bomb(Exception):
    """A member expands past the ratio cap."""


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, zero-width, bidi, tags)
    written as an escape, so a name or an excerpt cannot rewrite the terminal it is shown on
    or hide part of itself."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def decode(data: bytes) -> tuple[str, bool] | None:
    """Text from bytes: (text, had invalid UTF-8), or None for binary content.

    UTF-16 with a byte-order mark (PowerShell's habit) is text; otherwise a NUL byte in the
    head, or more than a tenth of the content undecodable, means binary.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
        return text, "\ufffd" in text
    if b"\x00" in data[:_HEAD]:
        return None
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="replace")
        if text.count("\ufffd") > max(8, len(text) // 10):
            return None
        return text, True


def magic(head: bytes) -> Magic | None:
    """The kind of a binary from its first bytes (None: no known signature)."""
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head.startswith(b"MZ") and b"\x00" in head[:64]:
        return "pe"
    if head[:4] in _MACHO:
        return "macho"
    if head.startswith(_ARCHIVES) or head[257:262] == b"ustar" or _BZ2.match(head):
        return "archive"
    return None


_MACHO = {b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
          b"\xca\xfe\xba\xbe"}  # fmt: skip
_ARCHIVES = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c",
             b"Rar!\x1a\x07")  # fmt: skip
_BZ2 = re.compile(rb"BZh[1-9]1AY&SY")


def member_path_problem(name: str) -> str | None:
    """Why an archive member's name leaves the bundle (None: it does not)."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' in the path"
    return None


# Read first: what an agent reads or runs. Read last: what cannot hide instructions.
_FIRST = frozenset(
    ".md .markdown .txt .rst .json .jsonc .yaml .yml .toml .ini .cfg .sh .bash .zsh .fish .py "
    ".js .mjs .cjs .ts .mts .cts .jsx .tsx .ps1 .psm1 .psd1 .bat .cmd .vbs .rb .pl .php .lua "
    ".go .rs .java .kt .swift .applescript .scpt .html .xml .env .prompt .j2 .jinja".split()
)
_LAST = frozenset(
    ".png .jpg .jpeg .gif .webp .bmp .ico .svgz .pdf .woff .woff2 .ttf .otf .eot .mp3 .mp4 "
    ".wav .ogg .mov .avi .webm .pyc .pyo .class .o .a".split()
)
_FIRST_NAMES = frozenset(
    {"skill.md", "readme", "makefile", "dockerfile", "package.json", "mcp.json", ".mcp.json",
     "server.json", "manifest.json", "claude_desktop_config.json"}
)  # fmt: skip
_VENDORED = re.compile(r"(?:^|/)(?:node_modules|vendor|site-packages|\.venv|venv)/")


def priority(path: str) -> int:
    """0 for what an agent reads or runs, 1 for the rest, 2 for media and compiled files;
    one more under a vendored folder (node_modules and the like)."""
    name = path.rsplit("/", 1)[-1].lower()
    ext = os.path.splitext(name)[1]
    rank = 0 if ext in _FIRST or name in _FIRST_NAMES or not ext else 2 if ext in _LAST else 1
    return rank + (1 if _VENDORED.search(path) else 0)


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return printable(name)


@dataclasses.dataclass(frozen=True, slots=True)
class _Candidate:
    path: str
    size: int
    executable: bool
    ref: object  # the source's handle: a file path, a ZipInfo


class BundleReader:
    """One bundle on disk, read once by iterating: the items, then ``stats`` says how much
    was read and which caps stopped it. A missing or unusable path raises InvalidInput."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: Limits | None = None,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self.stats = ReadStats()
        self._progress = progress
        self._clock = clock
        self._deadline = 0.0
        self._done = 0
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise InvalidInput(f"no such file or folder: {printable(str(path))}") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {printable(str(path))}: {exc.strerror}") from None
        self.size = st.st_size
        if stat.S_ISDIR(st.st_mode):
            self.kind: BundleKind = "folder"
        elif stat.S_ISREG(st.st_mode):
            self.kind = self._sniff()
        else:
            raise InvalidInput(f"not a file or folder: {printable(str(path))}")

    def _sniff(self) -> BundleKind:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise InvalidInput(f"cannot read {printable(str(self.path))}: {exc}") from None
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return "zip"
        if head.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00")) or _BZ2.match(head):
            return "tar"
        if head[257:262] == b"ustar":
            return "tar"
        return "file"

    def __iter__(self) -> Iterator[Item]:
        self._deadline = self._clock() + self.limits.max_seconds
        if self.kind == "folder":
            yield from self._folder()
        elif self.kind == "zip":
            yield from self._zip()
        elif self.kind == "tar":
            yield from self._tar()
        else:
            yield from self._single()

    # ------------------------------------------------------------------ shared

    def _cap(self, cap: Cap, detail: str, left: int = 0) -> Note:
        self.stats.caps.append(cap)
        self.stats.not_read += left
        return Note("capped", "", detail)

    def _out_of_time(self) -> bool:
        return self._clock() > self._deadline

    def _tick(self, path: str, planned: int | None) -> None:
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, planned, path)

    def _consume(self, path: str, stream: _Stream, size: int, executable: bool) -> Iterator[Item]:
        """One file's items from its open stream: a binary's kind from its head, a text
        file read whole if the caps allow. Raises _Capped when the total cap is reached."""
        head = _read_upto(stream, _HEAD)
        kind = magic(head)
        if kind is not None or decode(head) is None:
            self.stats.bytes_read += len(head)
            yield BinaryFile(path, max(size, len(head)), kind or "other", executable)
            if kind is None:
                yield Note("binary", path, "binary content: not scanned")
            return
        if size > self.limits.max_file_bytes:
            self.stats.bytes_read += len(head)
            self.stats.unscanned_text += 1
            yield Note("too_large", path, f"{_mib(size)} is over the "
                       f"{_mib(self.limits.max_file_bytes)} file cap: not scanned")  # fmt: skip
            return
        if self.stats.bytes_read + max(size, len(head)) > self.limits.max_total_bytes:
            raise _Capped
        data = head + _read_upto(stream, self.limits.max_file_bytes + 1 - len(head))
        self.stats.bytes_read += len(data)
        if len(data) > self.limits.max_file_bytes:
            self.stats.unscanned_text += 1
            yield Note("too_large", path, f"over the {_mib(self.limits.max_file_bytes)} "
                       "file cap (more than its header said): not scanned")  # fmt: skip
            return
        decoded = decode(data)
        if decoded is None:
            yield BinaryFile(path, len(data), "other", executable)
            yield Note("binary", path, "binary content: not scanned")
            return
        text, replaced = decoded
        self.stats.files_read += 1
        if replaced:
            yield Note("invalid_utf8", path, "invalid UTF-8: decoded with replacement characters")
        yield TextFile(path, text, len(data), executable, replaced)

    def _order(self, cand: _Candidate) -> tuple[int, bool, int, str]:
        """What an agent reads or runs first; within that, files over the size cap (only
        their heads are read: a note says they were skipped even if the total cap stops the
        scan later), then the smallest first."""
        return priority(cand.path), cand.size <= self.limits.max_file_bytes, cand.size, cand.path

    def _read_planned(
        self, candidates: list[_Candidate], read: Callable[[_Candidate], Iterator[Item]]
    ) -> Iterator[Item]:
        """Each candidate read in the planned order (instructions and scripts first) until
        the time or the total cap stops it; what is left unread is said in a note."""
        candidates.sort(key=self._order)
        planned = len(candidates)
        for i, cand in enumerate(candidates):
            if self._out_of_time():
                yield self._cap("time", f"stopped after {self.limits.max_seconds:g} s: "
                                f"{planned - i} file(s) not read", planned - i)  # fmt: skip
                return
            try:
                yield from read(cand)
            except _Capped:
                yield self._total_cap_note(planned - i)
                return
            self._tick(cand.path, planned)

    def _total_cap_note(self, left: int) -> Note:
        return self._cap("total_bytes", f"stopped reading at the "
                         f"{_mib(self.limits.max_total_bytes)} total cap: "
                         f"{left or 'the remaining'} file(s) not read", left)  # fmt: skip

    # ------------------------------------------------------------------ a single file

    def _single(self) -> Iterator[Item]:
        name = _clean(self.path.name)
        self.stats.members = 1
        try:
            with open(self.path, "rb", buffering=0) as fh:
                st = os.fstat(fh.fileno())
                yield from self._consume(name, fh, st.st_size, bool(st.st_mode & 0o111))
        except _Capped:
            yield self._total_cap_note(1)
        self._tick(name, 1)

    # ------------------------------------------------------------------ folders

    def _folder(self) -> Iterator[Item]:
        root = os.path.realpath(self.path)
        candidates: list[_Candidate] = []
        yield from self._walk(root, candidates)
        yield from self._read_planned(candidates, self._folder_file)

    def _walk(self, root: str, found: list[_Candidate]) -> Iterator[Item]:
        stack: list[tuple[str, str, int]] = [(root, "", 0)]
        while stack:
            folder, rel, depth = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        self.stats.members += 1
                        if self.stats.members > self.limits.max_members:
                            yield self._cap("members", f"more than {self.limits.max_members} "
                                            "members: the rest was not listed")  # fmt: skip
                            return
                        yield from self._entry(entry, root, rel, depth, stack, found)
            except OSError as exc:
                yield Note("unreadable", _clean(rel.rstrip("/")) or ".",
                           f"folder not listed: {exc.strerror}")  # fmt: skip
                self.stats.unscanned_text += 1

    def _entry(
        self, entry: os.DirEntry[str], root: str, rel: str, depth: int,
        stack: list[tuple[str, str, int]], found: list[_Candidate],
    ) -> Iterator[Item]:  # fmt: skip
        path = _clean(rel + entry.name)
        try:
            if entry.is_symlink():
                target = os.readlink(entry.path)
                resolved = os.path.realpath(entry.path)
                inside = os.path.commonpath([root, resolved]) == root
                if inside:
                    yield Note("symlink", path, f"link to {printable(target)} (inside the "
                               "bundle): not followed")  # fmt: skip
                else:
                    yield Anomaly("symlink_escape", path, f"-> {printable(target)}", True)
                return
            if entry.is_dir(follow_symlinks=False):
                if entry.name == ".git":
                    yield Note("skipped_dir", path, "git metadata: not scanned")
                elif depth + 1 > self.limits.max_depth:
                    self.stats.caps.append("depth")
                    yield Note("capped", path, f"nested deeper than {self.limits.max_depth} "
                               "folders: not listed")  # fmt: skip
                else:
                    stack.append((entry.path, rel + entry.name + "/", depth + 1))
                return
            st = entry.stat(follow_symlinks=False)
        except (OSError, ValueError) as exc:
            yield Note("unreadable", path, f"not readable: {exc}")
            return
        if stat.S_ISREG(st.st_mode):
            found.append(_Candidate(path, st.st_size, bool(st.st_mode & 0o111), entry.path))
        else:
            yield Anomaly("special_file", path, _file_type(st.st_mode))

    def _folder_file(self, cand: _Candidate) -> Iterator[Item]:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(str(cand.ref), flags)
        except OSError as exc:
            self.stats.unscanned_text += 1
            yield Note("unreadable", cand.path, f"not readable: {exc.strerror}")
            return
        with os.fdopen(fd, "rb", buffering=0) as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped after the walk
                yield Anomaly("special_file", cand.path, _file_type(st.st_mode))
                return
            try:
                yield from self._consume(cand.path, fh, st.st_size, cand.executable)
            except OSError as exc:
                self.stats.unscanned_text += 1
                yield Note("unreadable", cand.path, f"read failed: {exc.strerror}")

    # ------------------------------------------------------------------ zip

    def _zip(self) -> Iterator[Item]:
        declared = _zip_directory_size(self.path)
        if declared is None:
            raise InvalidInput(f"not a readable zip archive: {printable(str(self.path))}")
        entries, directory_bytes = declared
        if entries > self.limits.max_members or directory_bytes > 1024 * self.limits.max_members:
            self.stats.members = entries
            yield self._cap(
                "members",
                f"{entries} members declared (cap "
                f"{self.limits.max_members}): the archive was not read",
                entries,
            )
            return
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InvalidInput(f"not a readable zip archive: {exc}") from None
        with archive:
            candidates: list[_Candidate] = []
            yield from self._zip_list(archive, candidates)
            yield from self._read_planned(
                candidates, lambda cand: self._zip_member(archive, cand)
            )

    def _zip_list(self, archive: zipfile.ZipFile, found: list[_Candidate]) -> Iterator[Item]:
        seen: set[str] = set()
        declared_total = 0
        for info in archive.infolist():
            self.stats.members += 1
            path = _clean(info.filename)
            problem = member_path_problem(info.filename)
            if problem is not None:
                yield Anomaly("path_traversal", path, problem, True)
            key = info.filename.rstrip("/")
            if key in seen:
                yield Anomaly("duplicate", path, "a second member with this name")
            seen.add(key)
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                yield self._zip_link(archive, info, path)
                continue
            if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                yield Anomaly("special_file", path, _file_type(mode))
                continue
            if info.flag_bits & 0x1:
                self.stats.unscanned_text += 1
                yield Anomaly("encrypted", path, "encrypted: not scanned")
                continue
            declared_total += info.file_size
            if _bomb_ratio(info.file_size, info.compress_size, self.limits):
                yield Anomaly("bomb", path, f"declares {_mib(info.file_size)} from "
                              f"{info.compress_size} bytes: not opened")  # fmt: skip
                continue
            executable = info.create_system == 3 and bool(mode & 0o111)
            found.append(_Candidate(path, info.file_size, executable, info))
        if declared_total > self.limits.max_declared_bytes:
            yield Anomaly("bomb", "", f"members declare {_mib(declared_total)} in all "
                          f"(cap {_mib(self.limits.max_declared_bytes)})")  # fmt: skip

    def _zip_link(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Anomaly:
        try:
            with archive.open(info) as fh:
                target = fh.read(1024).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, zlib.error):
            target = "?"
        outside = member_path_problem(target) is not None
        return Anomaly("link_member", path, f"symbolic link -> {printable(target)}", outside)

    def _zip_member(self, archive: zipfile.ZipFile, cand: _Candidate) -> Iterator[Item]:
        info = cand.ref
        assert isinstance(info, zipfile.ZipInfo)
        try:
            with archive.open(info) as raw:
                guard = _RatioGuard(raw, info.compress_size, self.limits)
                yield from self._consume(cand.path, guard, cand.size, cand.executable)
        except _Bomb:
            yield Anomaly("bomb", cand.path, f"expands past {self.limits.max_ratio:g}x its "
                          f"{info.compress_size} compressed bytes: reading stopped")  # fmt: skip
        except zipfile.BadZipFile as exc:
            yield Anomaly("size_mismatch", cand.path, f"{exc}")
        except (OSError, ValueError, RuntimeError, EOFError, NotImplementedError, zlib.error,
                lzma.LZMAError) as exc:  # fmt: skip
            self.stats.unscanned_text += 1
            yield Note("unreadable", cand.path, f"member not readable: {exc}")

    # ------------------------------------------------------------------ tar

    def _tar(self) -> Iterator[Item]:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(self.path, "rb"))
            head = raw.read(6)
            raw.seek(0)
            plain: _Stream = raw
            if head.startswith(b"\x1f\x8b"):
                plain = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            elif head.startswith(b"\xfd7zXZ\x00"):
                plain = stack.enter_context(lzma.LZMAFile(raw, mode="rb"))
            elif head.startswith(b"BZh"):
                plain = stack.enter_context(bz2.BZ2File(raw, mode="rb"))
            meter = _Meter(plain, self.limits.max_expanded_bytes)
            try:
                archive = tarfile.open(fileobj=cast(IO[bytes], meter), mode="r|")
            except _Capped:
                yield from self._tar_capped(meter)
                return
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise InvalidInput(f"not a readable tar archive: {exc}") from None
            with archive:
                yield from self._tar_members(archive, meter)

    def _tar_members(self, archive: tarfile.TarFile, meter: _Meter) -> Iterator[Item]:
        members = iter(archive)
        while True:
            try:
                member = next(members)
            except StopIteration:
                break
            except _Capped:
                yield from self._tar_capped(meter)
                return
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                self.stats.caps.append("expanded")
                yield Note("corrupt", "", f"archive stream broken after {self.stats.members} "
                           f"member(s) ({exc}): the rest was not read")  # fmt: skip
                break
            self.stats.members += 1
            if self.stats.members > self.limits.max_members:
                yield self._cap("members", f"more than {self.limits.max_members} members: "
                                "the rest was not read")  # fmt: skip
                break
            if self._out_of_time():
                yield self._cap("time", f"stopped after {self.limits.max_seconds:g} s")
                break
            try:
                yield from self._tar_member(archive, member)
            except _Capped:
                if meter.capped:
                    yield from self._tar_capped(meter)
                else:
                    yield self._total_cap_note(0)
                return
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                self.stats.caps.append("expanded")
                yield Note("corrupt", _clean(member.name), f"member not readable ({exc}): "
                           "the rest was not read")  # fmt: skip
                break
        self.stats.expanded_bytes = meter.count
        if _bomb_ratio(meter.count, self.size, self.limits):
            yield Anomaly("bomb", "", f"expands to {_mib(meter.count)} from "
                          f"{_mib(self.size)}")  # fmt: skip

    def _tar_capped(self, meter: _Meter) -> Iterator[Item]:
        self.stats.expanded_bytes = meter.count
        yield self._cap(
            "expanded",
            f"stopped decompressing at the "
            f"{_mib(self.limits.max_expanded_bytes)} cap: the rest was not read",
        )
        if _bomb_ratio(meter.count, self.size, self.limits):
            yield Anomaly("bomb", "", f"expands past {_mib(meter.count)} from "
                          f"{_mib(self.size)}")  # fmt: skip

    def _tar_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[Item]:
        path = _clean(member.name)
        problem = member_path_problem(member.name)
        if problem is not None:
            yield Anomaly("path_traversal", path, problem, True)
        if member.isdir():
            return
        if member.issym() or member.islnk():
            what = "symbolic" if member.issym() else "hard"
            target = member.linkname
            outside = member_path_problem(target) is not None
            yield Anomaly("link_member", path, f"{what} link -> {printable(target)}", outside)
            return
        if not member.isreg():
            yield Anomaly("special_file", path, "device, FIFO or other special member")
            return
        fh = archive.extractfile(member)
        if fh is None:
            return
        yield from self._consume(path, fh, member.size, bool(member.mode & 0o111))
        self._tick(path, None)


class _Meter:
    """A decompressed stream that refuses to yield more than ``limit`` bytes in all."""

    def __init__(self, inner: _Stream, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self.count = 0
        self.capped = False

    def read(self, n: int = -1) -> bytes:
        room = self._limit - self.count
        if room <= 0:
            self.capped = True
            raise _Capped
        data = self._inner.read(room if n is None or n < 0 else min(n, room))
        self.count += len(data)
        return data

    def close(self) -> None:  # tarfile closes what it opened; the file is ours to close
        pass


class _RatioGuard:
    """A zip member's stream that stops once it expands past the ratio cap."""

    def __init__(self, inner: IO[bytes], packed: int, limits: Limits) -> None:
        self._inner = inner
        self._packed = packed
        self._limits = limits
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._inner.read(n)
        self.count += len(data)
        if _bomb_ratio(self.count, self._packed, self._limits):
            raise _Bomb
        return data


def _bomb_ratio(expanded: int, packed: int, limits: Limits) -> bool:
    return expanded > limits.ratio_floor_bytes and expanded > limits.max_ratio * max(packed, 1)


def _read_upto(stream: _Stream, n: int) -> bytes:
    """Up to ``n`` bytes, in chunks (a stream may return less than asked)."""
    parts: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _zip_directory_size(path: Path) -> tuple[int, int] | None:
    """(members, central directory bytes) from a zip's end records, read before zipfile
    parses the whole directory into memory; None if there is no end record."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_len = min(size, 22 + 65535)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[at : at + 22])
        if entries != 0xFFFF and cd_size != 0xFFFFFFFF:
            return entries, cd_size
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(b"PK\x06\x07"):
            return entries, cd_size
        (offset,) = struct.unpack("<Q", locator[8:16])
        if offset > size - 56:
            return None
        fh.seek(offset)
        record = fh.read(56)
        if not record.startswith(b"PK\x06\x06"):
            return None
        entries64, cd_size64 = struct.unpack("<2Q", record[32:48])
        return int(entries64), int(cd_size64)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def _mib(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n >= _MIB else f"{n} bytes"
