"""Logs that tell what happened: JSON lines as a setting, library chatter held at warning, no
misleading CUDA notice on CPU machines, progress bars only on a terminal (stderr), never in
a command's JSON on stdout, and `up --index` following the indexing until the folder is done."""

from __future__ import annotations

import fcntl
import io
import itertools
import json
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from imagegen import CATEGORIES, image_bytes

from lookalike.encoders.device import CUDA_HOME_NOTICE, quiet_cuda_home_notice
from lookalike.logs import LIBRARIES, JsonFormatter, TerminalHandler, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in LIBRARIES}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_json_logs_are_one_object_per_line(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("lookalike.test")
    log.info("batch of %d: %d indexed", 32, 30, extra={"batch": 7})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "batch of 32: 30 indexed" and first["level"] == "info"
    assert first["logger"] == "lookalike.test" and first["batch"] == 7
    assert first["time"].endswith("+00:00")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_library_chatter_is_held_at_warning_unless_debug(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger("kafka.net.connection").info("Connected")
    logging.getLogger("aiokafka.consumer").info("Joined group")
    logging.getLogger("faust.worker").info("Starting...")
    logging.getLogger("mode.services").info("Stopping...")
    logging.getLogger("kafka.net.connection").warning("connection refused")
    logging.getLogger("lookalike.streams.batches").info("batch of 32")
    text = out.getvalue()
    assert "Connected" not in text and "Joined group" not in text and "Starting" not in text
    assert "Stopping" not in text
    assert "connection refused" in text and "batch of 32" in text

    configure_logging("debug", "text", stream=out)
    logging.getLogger("kafka.net.connection").info("Connected again")
    assert "Connected again" in out.getvalue()
    # Called again, it replaced its own handler (one line per record, not two).
    assert out.getvalue().count("Connected again") == 1


def test_the_handler_follows_a_swapped_stderr(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("info", "text")
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("lookalike.test").info("to the new stderr")
    assert "to the new stderr" in swapped.getvalue()
    assert [h for h in logging.getLogger().handlers if isinstance(h, TerminalHandler)]


def test_json_formatter_keeps_unserialisable_extras_as_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.path = Path("/tmp/a")
    assert json.loads(JsonFormatter().format(record))["path"] == "/tmp/a"


def test_no_cuda_home_notice_on_a_machine_without_cuda(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("the notice is only logged where no CUDA device is visible")
    from torch.utils import cpp_extension

    # torch.compile's C++ build asks where CUDA lives; with a toolkit (nvcc, CUDA_HOME) and no
    # device, torch logs a warning that reads like a failure.
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    logger = logging.getLogger("torch.utils.cpp_extension")
    ours = [f for f in logger.filters if type(f).__name__ == "_WithoutCudaHomeNotice"]
    for f in ours:
        logger.removeFilter(f)
    try:
        with caplog.at_level(logging.WARNING, logger="torch.utils.cpp_extension"):
            cpp_extension._find_cuda_home()
        assert any(CUDA_HOME_NOTICE in r.getMessage() for r in caplog.records)  # the symptom
        caplog.clear()
        quiet_cuda_home_notice()
        with caplog.at_level(logging.WARNING, logger="torch.utils.cpp_extension"):
            cpp_extension._find_cuda_home()
            logger.warning("another cpp_extension warning")
        messages = [r.getMessage() for r in caplog.records]
        assert not any(CUDA_HOME_NOTICE in m for m in messages)
        assert "another cpp_extension warning" in messages  # only that notice goes
    finally:
        for f in ours:
            if f not in logger.filters:
                logger.addFilter(f)


# --- progress bars -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    for category in CATEGORIES:
        (root / category).mkdir()
        for seed in range(3):
            (root / category / f"{seed}.jpg").write_bytes(image_bytes(category, seed))
    return root


def _eval_json(dataset: Path, tmp_path: Path, terminal: bool) -> tuple[str, str]:
    """`lookalike eval DIR --json`: stdout through a pipe; stderr a terminal (a pty of 100
    columns) or a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(LOOKALIKE_COMPILE="false", LOOKALIKE_DATA_DIR=str(tmp_path / "data"))
    command = [sys.executable, "-m", "lookalike", "eval", str(dataset), "--json"]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, timeout=300, check=True)
        return done.stdout.decode(), done.stderr.decode()
    controller, terminal_end = pty.openpty()
    fcntl.ioctl(terminal_end, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=terminal_end)
    os.close(terminal_end)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = process.stdout.read().decode() if process.stdout else ""
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    os.close(controller)
    return stdout, b"".join(chunks).decode(errors="replace")


def test_eval_json_shows_progress_on_a_terminal_and_keeps_stdout_json(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    stdout, stderr = _eval_json(tiny_dataset, tmp_path, terminal=True)
    report = json.loads(stdout)  # stdout is the JSON object and nothing else
    assert report["queries"] == 9 and report["model_version"].startswith("efficientnet-lite0")
    assert "embedding" in stderr and "9/9" in stderr and "100%" in stderr


def test_no_progress_bar_without_a_terminal(tiny_dataset: Path, tmp_path: Path) -> None:
    stdout, stderr = _eval_json(tiny_dataset, tmp_path, terminal=False)
    assert json.loads(stdout)["queries"] == 9
    assert "embedding" not in stderr and "%|" not in stderr


def test_a_batch_line_names_only_what_happened() -> None:
    from lookalike.indexing import BatchResult
    from lookalike.streams.batches import describe_outcomes

    assert describe_outcomes(BatchResult(indexed=["a", "b"])) == "2 indexed"
    mixed = BatchResult(indexed=["a"], removed=["b"], stale=3)
    assert describe_outcomes(mixed) == "1 indexed, 1 removed, 3 stale"
    assert describe_outcomes(BatchResult()) == "nothing to do"


# --- up --index follows the indexing -------------------------------------------------------


@contextmanager
def stats_server(published: int, step: int) -> Iterator[str]:
    """A worker's GET /stats that consumes ``step`` more upload events at each ask."""
    asked = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            consumed = min(next(asked) * step, published)
            body = json.dumps(
                {
                    "worker": {
                        "events_consumed": consumed,
                        "images_indexed": consumed - 1,
                        "images_updated": 0,
                        "stale_events": 0,
                        "dead_letters": 1,
                    },
                    "serving_version": "v1",
                    "indexed": {"v1": consumed - 1},
                    "alerts": {"open": 2},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("terminal", [False, True])
def test_up_index_shows_the_indexing_until_the_folder_is_indexed(
    terminal: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lookalike.cli import progress
    from lookalike.settings import Settings

    monkeypatch.setattr(progress, "POLL", 0.01)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.02)
    with stats_server(published=30, step=3) as url, caplog.at_level("INFO", logger="lookalike"):
        follower = progress.IndexingProgress(
            Settings(data_dir=tmp_path, api_url=url), 30, "shop/", terminal
        )
        follower.start()
        assert follower.finished.wait(30)
        follower.join(5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1].startswith(
        "indexed shop/: 29 images indexed, 0 updated, 0 stale, 1 dead-lettered in "
    )
    assert "29 images searchable (v1), 2 category alerts open" in messages[-1]
    steps = [m for m in messages if m.startswith("indexing shop/: ")]
    bar = capsys.readouterr().err
    if terminal:  # a bar on stderr, no progress lines in the log
        assert not steps and "indexing" in bar and "30/30" in bar
    else:  # progress lines, no bar
        assert steps and all(" of 30 events consumed (" in m for m in steps) and bar == ""
