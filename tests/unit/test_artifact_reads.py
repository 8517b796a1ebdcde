"""Reading an artifact never trusts it (SPEC section 6): regular files only, directly in
the task folder, non-blocking, at most 1 MiB, no YAML anchors or aliases, and at most
200 characters of its text in any reason. Real FIFOs, sockets, devices and links."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from orch.artifacts import (
    MAX_ARTIFACT_BYTES,
    QUOTE_LIMIT,
    ArtifactError,
    MissingArtifact,
    artifact_stat,
    describe_value,
    parse_document,
    quote,
    read_artifact,
    read_document,
)
from orch.prompts import previous_round_report, prompt_context


def refused(folder: Path, name: str) -> str:
    with pytest.raises(ArtifactError) as caught:
        read_artifact(folder, name)
    assert not isinstance(caught.value, MissingArtifact)
    return str(caught.value)


def test_a_regular_file_is_read_with_its_mtime(tmp_path: Path) -> None:
    (tmp_path / "02-analysis.md").write_bytes(b"hello\n")
    file = read_artifact(tmp_path, "02-analysis.md")
    assert file.data == b"hello\n"
    assert file.mtime_ns == (tmp_path / "02-analysis.md").stat().st_mtime_ns


def test_missing_file_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifact, match=r"02-analysis\.md is missing"):
        read_artifact(tmp_path, "02-analysis.md")
    with pytest.raises(MissingArtifact):
        read_artifact(tmp_path / "nowhere", "02-analysis.md")
    assert artifact_stat(tmp_path, "02-analysis.md") is None
    assert artifact_stat(tmp_path / "nowhere", "02-analysis.md") is None


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "02-analysis.md")
    started = time.monotonic()
    assert refused(tmp_path, "02-analysis.md") == "02-analysis.md is a FIFO, not a regular file"
    assert time.monotonic() - started < 1


def test_a_socket_a_directory_and_a_device_are_refused(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock.md"))
        assert refused(tmp_path, "sock.md") == "sock.md is a socket, not a regular file"
    finally:
        server.close()
    (tmp_path / "dir.md").mkdir()
    assert refused(tmp_path, "dir.md") == "dir.md is a directory, not a regular file"
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(tmp_path / "dev.md", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
    assert refused(tmp_path, "dev.md") == "dev.md is a character device, not a regular file"


def test_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("fresh\n")
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "02-analysis.md").symlink_to(outside)
    assert refused(folder, "02-analysis.md") == "02-analysis.md is a symlink, not a regular file"
    (folder / "12-review.md").symlink_to("/dev/zero")
    assert "symlink" in refused(folder, "12-review.md")
    linked = tmp_path / "linked-task"
    linked.symlink_to(folder)
    (folder / "ok.md").write_text("ok\n")
    assert "cannot be read safely" in refused(linked, "ok.md")
    st = artifact_stat(folder, "02-analysis.md")
    assert st is not None and stat.S_ISLNK(st.st_mode)


def test_names_outside_the_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.md").write_text("x")
    for name in ("sub/x.md", "../x.md", "..", ".", ""):
        with pytest.raises(ArtifactError, match="is not a file name"):
            read_artifact(tmp_path, name)


def test_the_size_cap(tmp_path: Path) -> None:
    (tmp_path / "cap.md").write_bytes(b"x" * MAX_ARTIFACT_BYTES)
    assert len(read_artifact(tmp_path, "cap.md").data) == MAX_ARTIFACT_BYTES
    (tmp_path / "big.md").write_bytes(b"x" * (MAX_ARTIFACT_BYTES + 1))
    assert refused(tmp_path, "big.md") == "big.md is 1048577 bytes, over the 1 MiB cap"
    with open(tmp_path / "sparse.md", "wb") as handle:
        handle.truncate(50 * 2**30)  # 50 GiB, sparse: nothing is read
    assert refused(tmp_path, "sparse.md") == "sparse.md is 51200 MiB, over the 1 MiB cap"


def test_yaml_anchors_and_aliases_are_malformed() -> None:
    with pytest.raises(ArtifactError, match="anchors or aliases"):
        parse_document("---\na: &x 1\nb: *x\n---\nbody\n")
    with pytest.raises(ArtifactError, match="anchors or aliases"):
        parse_document("---\nverdict: &x APPROVE\n---\nbody\n")  # an anchor alone
    bomb = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                     + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
                        for i in range(8)])
    with pytest.raises(ArtifactError, match="anchors or aliases"):
        parse_document(f"---\n{bomb}\n---\n")
    assert parse_document("---\nverdict: APPROVE\nlist: [1, 2]\n---\nok\n").meta == {
        "verdict": "APPROVE", "list": [1, 2]}


def test_yaml_errors_quote_little_of_the_file() -> None:
    secret = "y" * 5000
    with pytest.raises(ArtifactError) as caught:
        parse_document(f"---\nkey: [{secret}\n---\n")
    assert len(str(caught.value)) < QUOTE_LIMIT + 80
    with pytest.raises(ArtifactError, match="not valid YAML"):
        parse_document("---\n\x00\n---\n")


def test_quote_and_describe_value() -> None:
    assert quote("a\nb   c") == "a b c"
    long = quote("z" * 1000)
    assert len(long) == QUOTE_LIMIT and long.endswith("...")
    assert describe_value("MAYBE") == "'MAYBE'"
    assert describe_value(["APPROVE"]) == "(a list)" and describe_value({"a": 1}) == "(a mapping)"
    assert describe_value(3) == "3" and describe_value(None) == "None"
    assert len(describe_value("q" * 10_000)) <= QUOTE_LIMIT + 2


def test_read_document_is_safe_too(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "13-test-report.md")
    with pytest.raises(ArtifactError, match="FIFO"):
        read_document(tmp_path / "13-test-report.md")
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe")
    with pytest.raises(ArtifactError, match="not UTF-8"):
        read_document(tmp_path / "bad.md")


def test_prompts_never_block_on_what_an_agent_left(tmp_path: Path) -> None:
    """The tick renders the next agent's prompt from the reports: a FIFO there must not
    stop it either (named in the prompt instead of read)."""
    os.mkfifo(tmp_path / "12-review.md")
    os.mkfifo(tmp_path / "01-questions.md")
    started = time.monotonic()
    report = previous_round_report(tmp_path)
    context = prompt_context(task_id=1, repo="app", stage="development", round_no=1,
                             artifacts=tmp_path, worktree=tmp_path, branch="b",
                             default_branch="main")
    assert time.monotonic() - started < 2
    assert report is not None and "12-review.md was not read" in report[1]
    assert "01-questions.md was not read" in context["answered_questions"]
