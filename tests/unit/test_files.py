"""The file service on a fake root (a tmp_path directory): resolution inside the root, policy
checks on resolved paths, the symlink-free final open, caps, encodings and credentials
(:mod:`clove.kernel.services.files` and :mod:`clove.sandbox.rootfs`)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clove.config import AgentConfig
from clove.errors import (
    Conflict,
    InvalidArguments,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ResourceExhausted,
)
from clove.kernel.core.agents import Agent
from clove.kernel.services import files
from clove.kernel.services.files import read_file, write_file
from clove.kernel.services.fileviews import View, agent_view
from clove.kernel.syscalls.files import _content_bytes
from clove.policy import for_level
from clove.sandbox.rootfs import Credentials, acting_as, resolve

WORK = "/work"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "work" / "a.txt").write_text("hello")
    return tmp_path


@pytest.fixture
def view(root: Path) -> Iterator[View]:
    with View(os.open(root, os.O_PATH | os.O_DIRECTORY), WORK, None, who="agent") as v:
        yield v


@pytest.fixture
def fd(root: Path) -> Iterator[int]:
    handle = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield handle
    os.close(handle)


PERMS = for_level("standard", work_dir=WORK)


# ---- resolution --------------------------------------------------------------------------------


def test_resolution_stays_inside_the_root(root: Path, fd: int) -> None:
    assert resolve(fd, "/work/a.txt")[0] == "/work/a.txt"
    assert resolve(fd, "/work/./../work//a.txt")[0] == "/work/a.txt"
    assert resolve(fd, "/../../../etc/passwd")[0] == "/etc/passwd"  # ".." stops at the root
    path, st = resolve(fd, "/work/new.txt")
    assert path == "/work/new.txt" and st is None
    assert resolve(fd, "/")[0] == "/"


def test_symlinks_resolve_inside_the_root(root: Path, fd: int) -> None:
    os.symlink("/etc/passwd", root / "work" / "abs")
    os.symlink("../../../../etc", root / "work" / "up")
    os.symlink("a.txt", root / "work" / "rel")
    os.symlink("/nowhere/x", root / "work" / "dangling")
    assert resolve(fd, "/work/abs")[0] == "/etc/passwd"  # the root's /etc, never the host's
    assert resolve(fd, "/work/up/passwd")[0] == "/etc/passwd"
    assert resolve(fd, "/work/rel")[0] == "/work/a.txt"
    assert resolve(fd, "/work/abs", follow_last=False)[0] == "/work/abs"
    with pytest.raises(FileNotFoundError):
        resolve(fd, "/work/dangling")  # /nowhere is missing on the way
    os.symlink("loop2", root / "work" / "loop1")
    os.symlink("loop1", root / "work" / "loop2")
    with pytest.raises(OSError, match="Too many levels") as err:
        resolve(fd, "/work/loop1")
    assert err.value.errno == errno.ELOOP


def test_missing_directories_and_files_used_as_directories(fd: int) -> None:
    with pytest.raises(FileNotFoundError):
        resolve(fd, "/work/missing/x")
    with pytest.raises(NotADirectoryError):
        resolve(fd, "/work/a.txt/x")


def test_proc_magic_links_are_read_as_text_inside_the_root(root: Path, fd: int) -> None:
    (root / "proc").mkdir()
    os.symlink("/proc/self/root/etc/passwd", root / "work" / "magic")
    # /proc/self here is the root's own (missing) /proc/self: nothing on the host is reached.
    with pytest.raises(FileNotFoundError):
        resolve(fd, "/work/magic")


# ---- read and write through a view -------------------------------------------------------------


def test_read_and_write_in_the_work_dir(root: Path, view: View) -> None:
    assert read_file(view, PERMS, "a.txt") == {
        "success": True, "content": "hello", "size": 5, "encoding": "utf-8", "path": "/work/a.txt",
    }  # fmt: skip
    assert write_file(view, PERMS, "b.txt", b"one\n") == {
        "success": True,
        "bytes_written": 4,
        "path": "/work/b.txt",
    }
    write_file(view, PERMS, "/work/b.txt", b"two\n", append=True)
    assert (root / "work" / "b.txt").read_bytes() == b"one\ntwo\n"
    write_file(view, PERMS, "b.txt", b"x")
    assert (root / "work" / "b.txt").read_bytes() == b"x"
    write_file(view, PERMS, "/tmp/t", b"t")
    assert (root / "tmp" / "t").read_bytes() == b"t"


def test_policy_applies_to_the_resolved_path(root: Path, view: View) -> None:
    os.symlink("/etc/passwd", root / "work" / "pw")
    os.symlink("/etc/newfile", root / "work" / "dangling")
    with pytest.raises(PermissionDenied) as err:
        read_file(view, PERMS, "pw")
    assert err.value.details == {"path": "/etc/passwd", "access": "read"}
    with pytest.raises(PermissionDenied):
        read_file(view, PERMS, "../etc/passwd")
    with pytest.raises(PermissionDenied) as err:
        write_file(view, PERMS, "dangling", b"x")  # would create /etc/newfile
    assert err.value.details["path"] == "/etc/newfile" and not (root / "etc" / "newfile").exists()


def test_the_final_open_refuses_a_symlink_swapped_in_after_the_check(
    root: Path, view: View, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "work" / "sub").mkdir()
    real = resolve

    def racing(fd: int, path: str, *, follow_last: bool = True) -> tuple[str, os.stat_result | None]:
        result = real(fd, path, follow_last=follow_last)
        (root / "work" / "sub").rmdir()  # the agent swaps a checked directory for a symlink
        os.symlink("/etc", root / "work" / "sub")
        return result

    monkeypatch.setattr(files, "resolve", racing)
    with pytest.raises(PermissionDenied, match="symlink"):
        write_file(view, PERMS, "sub/passwd", b"pwned")
    assert (root / "etc" / "passwd").read_text() == "root:x:0:0\n"


def test_errors_are_structured(root: Path, view: View) -> None:
    with pytest.raises(NotFound):
        read_file(view, PERMS, "missing.txt")
    with pytest.raises(NotFound):
        write_file(view, PERMS, "no/such/dir.txt", b"x")
    with pytest.raises(InvalidArguments, match="directory"):
        read_file(view, PERMS, "/work")
    with pytest.raises(InvalidArguments, match="directory"):
        write_file(view, PERMS, "/tmp", b"x")
    os.mkfifo(root / "work" / "fifo")
    with pytest.raises(InvalidArguments, match="regular"):
        read_file(view, PERMS, "fifo")  # opened non-blocking: never hangs the loop
    with pytest.raises(InvalidArguments):
        read_file(view, PERMS, "a\x00b")
    with pytest.raises(QuotaExceeded) as err:
        read_file(view, PERMS, "a.txt", max_bytes=4)
    assert err.value.details["size"] == 5


def test_a_file_that_cannot_be_used_is_the_callers_error_named_as_asked() -> None:
    # An operator's view is the host, and /proc/self resolves to the reading process: this one
    # here, the kernel in the service. Neither refusal may be ``internal`` or name that pid.
    own = f"/proc/{os.getpid()}"
    with View(os.open("/", os.O_PATH | os.O_DIRECTORY), None, None, who="operator") as host:
        grants = for_level("unrestricted")
        with pytest.raises(InvalidArguments) as unreadable:
            read_file(host, grants, "/proc/self/mem")  # EIO: nothing is mapped at offset 0
        with pytest.raises(InvalidArguments) as unwritable:
            write_file(host, grants, "/proc/self/oom_score_adj", b"not a number")  # EINVAL
    for err, path, code in ((unreadable, "/proc/self/mem", "EIO"), (unwritable, "/proc/self/oom_score_adj", "EINVAL")):
        assert path in err.value.message and own not in err.value.message
        assert err.value.details == {"path": path, "errno": code, "argument": "path"}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.ENOENT, NotFound),
        (errno.ENOTDIR, NotFound),
        (errno.EACCES, PermissionDenied),
        (errno.EPERM, PermissionDenied),
        (errno.EROFS, PermissionDenied),
        (errno.ELOOP, PermissionDenied),
        (errno.EISDIR, InvalidArguments),
        (errno.ENXIO, InvalidArguments),
        (errno.EIO, InvalidArguments),
        (errno.EINVAL, InvalidArguments),
        (errno.EOPNOTSUPP, InvalidArguments),
        (errno.ENAMETOOLONG, InvalidArguments),
        (errno.ENOSPC, QuotaExceeded),
        (errno.EFBIG, QuotaExceeded),
        (errno.EBUSY, Conflict),
        (errno.EAGAIN, Conflict),
        (errno.EMFILE, ResourceExhausted),
        (errno.ENOMEM, ResourceExhausted),
    ],
)
def test_os_errors_map_to_the_file_services_codes(code: int, error: type[Exception]) -> None:
    err = files.fs_error(OSError(code, os.strerror(code), "/proc/4242/mem"), "/proc/self/mem", "operator")
    assert type(err) is error  # and so never ``internal``
    assert "/proc/self/mem" in err.message and "4242" not in err.message


def test_relative_paths_need_a_base() -> None:
    with (
        View(os.open("/", os.O_PATH), None, who="operator") as v,
        pytest.raises(InvalidArguments, match="absolute"),
    ):
        v.absolute("notes.txt")


def test_binary_content_comes_back_as_base64(root: Path, view: View) -> None:
    write_file(view, PERMS, "blob", bytes(range(256)))
    result = read_file(view, PERMS, "blob")
    assert result["encoding"] == "base64" and result["size"] == 256
    assert _content_bytes(result["content"], "base64") == bytes(range(256))


def test_write_content_encodings() -> None:
    assert _content_bytes("żółw", None) == "żółw".encode()
    assert _content_bytes(b"\xff", None) == b"\xff"
    for content, encoding in (("%%%", "base64"), (b"x", "base64"), ("x", "latin-1"), ("\ud800", None)):
        with pytest.raises(InvalidArguments):
            _content_bytes(content, encoding)


# ---- whose view and whose permissions ----------------------------------------------------------


def test_an_agent_that_does_not_run_has_no_view() -> None:
    agent = Agent(id=7, spec=AgentConfig(name="gone", script="/x.py"), uid=300_007)
    with pytest.raises(Conflict, match="not running"):
        agent_view(agent, "/w")
    agent.pid = 2**22 + 12345  # beyond pid_max: no such process
    with pytest.raises(Conflict):
        agent_view(agent, "/w")


def test_an_agent_view_refuses_a_process_of_another_uid() -> None:
    agent = Agent(id=7, spec=AgentConfig(name="imposter", script="/x.py"), uid=300_007)
    agent.pid = os.getpid()  # alive, but not running as the agent's uid
    with pytest.raises(Conflict):
        agent_view(agent, "/w")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching file-system credentials needs root")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any uid can traverse (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="clove-fs-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@needs_root
def test_acting_as_applies_the_users_permissions_and_ownership(open_dir: Path) -> None:
    tmp_path = open_dir
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    secret = tmp_path / "secret"
    secret.write_text("s")
    os.chmod(secret, 0o600)
    with acting_as(Credentials(4_300_001, 4_300_001)):
        with pytest.raises(PermissionError):
            secret.read_text()
        (shared / "made").write_text("x")
    assert os.stat(shared / "made").st_uid == 4_300_001 and os.stat(shared / "made").st_gid == 4_300_001
    assert secret.read_text() == "s"  # root again
    with pytest.raises(RuntimeError), acting_as(Credentials(4_300_001, 4_300_001)):
        raise RuntimeError("restored even on errors")
    assert secret.read_text() == "s"


@needs_root
def test_unix_permissions_hold_through_a_view_even_when_granted(root: Path) -> None:
    os.chmod(root, 0o755)
    for d in ("work", "etc"):
        os.chmod(root / d, 0o755)
    os.chmod(root / "etc" / "passwd", 0o600)
    grants = for_level("unrestricted", work_dir=WORK)
    with View(os.open(root, os.O_PATH | os.O_DIRECTORY), WORK, Credentials(4_300_002, 4_300_002)) as v:
        with pytest.raises(PermissionDenied, match="permission denied"):
            read_file(v, grants, "/etc/passwd")
        with pytest.raises(PermissionDenied):
            write_file(v, grants, "/work/x", b"x")  # /work is root's 0755
    os.chmod(root / "work", 0o777)
    with View(os.open(root, os.O_PATH | os.O_DIRECTORY), WORK, Credentials(4_300_002, 4_300_002)) as v:
        write_file(v, grants, "/work/x", b"x")
    assert os.stat(root / "work" / "x").st_uid == 4_300_002
