"""What `lookalike up --index FOLDER` says, as a log collector gets it (LOOKALIKE_LOG_FORMAT=json,
stderr not a terminal): every line a JSON object, lookalike's own lines telling what happened
(the broker, the events published, ready, one line per batch, the folder indexed), no Kafka
client or Faust chatter, no progress bar, nothing on stdout."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from imagegen import CATEGORIES, image_bytes

from lookalike.kafka.local_broker import free_port

from .stack import clean_env, wait_for

PER_CATEGORY = 10


def test_up_index_logs_what_happened_as_json_lines(tmp_path: Path) -> None:
    folder = tmp_path / "catalogue"
    for category in CATEGORIES:
        (folder / category).mkdir(parents=True)
        for seed in range(PER_CATEGORY):
            (folder / category / f"{seed}.jpg").write_bytes(image_bytes(category, seed))
    total = PER_CATEGORY * len(CATEGORIES)
    env = clean_env(
        LOOKALIKE_LOG_FORMAT="json", LOOKALIKE_COMPILE="false", LOOKALIKE_BATCH_SIZE="8"
    )
    stderr_path, stdout_path = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with stderr_path.open("wb") as stderr, stdout_path.open("wb") as stdout:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookalike",
                "up",
                "--index",
                str(folder),
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(free_port()),
            ],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:

            def records() -> list[dict]:
                return [json.loads(line) for line in stderr_path.read_text().splitlines()]

            done = wait_for(
                lambda: [r for r in records() if r["message"].startswith(f"indexed {folder}")],
                180,
                "up to say the folder is indexed",
            )
        finally:
            up.send_signal(signal.SIGTERM)
            code = up.wait(timeout=60)
    assert code == 0, stderr_path.read_text()[-3000:]
    lines = records()  # every line parses as JSON (or records() raised above)
    messages = [r["message"] for r in lines]
    assert (
        f"{total} images indexed" in done[0]["message"] and "0 dead-lettered" in done[0]["message"]
    )
    assert any(m.startswith(f"published {total} upload events from {folder}") for m in messages)
    assert "category alerts open" in done[0]["message"] and messages[0].startswith("version ")
    assert sum(m.startswith("ready: consuming as group") for m in messages) == 1
    batches = [m for m in messages if m.startswith("batch of ")]
    assert len(batches) >= total // 8 and all("(prepare " in m for m in batches)
    assert any(m.startswith("stopping (SIGTERM)") for m in messages)
    chatter = [r for r in lines if r["logger"].startswith(("kafka", "aiokafka", "faust", "mode"))]
    assert all(r["level"] in ("warning", "error", "critical") for r in chatter), chatter[:5]
    # Faust's services say when they start and stop, whichever module subclassed them.
    services = [m for m in messages if m.endswith((": Starting...", ": Stopping..."))]
    assert not services, services[:5]
    assert len(lines) < 40 + len(batches), "\n".join(messages)  # the signal, not the noise
    assert not any("No CUDA runtime" in m or "%|" in m for m in messages)
    assert stdout_path.read_text() == ""  # logs and bars never go to stdout
