"""A Chroma server that goes away (issue 11, item 4), with a real `chroma run` killed with SIGKILL:
mid-ingest the CLI stops with one clear line and exit code 3, `list` and `search` while it is
down say the same, the app says it in the chat and the library panel, and once the server is
back the same command finishes the job with nothing lost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freeret_rag.errors import StoreUnreachableError

from test_library import chroma_cli

REPO = Path(__file__).resolve().parents[1]
FILES = 200


class ChromaServer:
    """`chroma run` on a fixed loopback port and folder, which a test can kill and start again."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "ChromaServer":
        import chromadb

        self.process = subprocess.Popen([chroma_cli(), "run", "--path", str(self.folder), "--host", "127.0.0.1",
                                         "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, cwd=self.folder.parent)
        deadline = time.time() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=self.port).heartbeat()
                return self
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError("chroma server did not start")
                time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def committed(self) -> int:
        """Committed rows (items of complete documents) in every index of this app (0 before the first
        is created). An item is written first and flipped to complete when its document is done."""
        import chromadb

        client = chromadb.HttpClient(host="127.0.0.1", port=self.port)
        return sum(len(client.get_collection(c.name).get(where={"complete": True}, include=[])["ids"])
                   for c in client.list_collections() if c.name.startswith("freeret-"))


@pytest.fixture()
def server(tmp_path, require_tool):
    require_tool("chroma", chroma_cli() is not None, "the `chroma` command line comes with the chromadb package")
    running = ChromaServer(tmp_path / "server").start()
    try:
        yield running
    finally:
        running.kill()


def cli(*args: str, model: Path | None = None, **popen) -> subprocess.Popen:
    flags = ["--model", str(model)] if model else []
    return subprocess.Popen([sys.executable, "-m", "freeret_rag", *flags, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, **popen)


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_the_cli_says_one_line_when_the_server_dies_mid_ingest_and_resumes_when_it_is_back(
        server, tiny_model_dirs, tmp_path):
    src, data = tmp_path / "in", tmp_path / "data"
    src.mkdir()
    for number in range(FILES):
        (src / f"note-{number:03d}.txt").write_text(f"Note {number}: the meeting about topic {number * 7} moved.\n")
    model = tiny_model_dirs["llama"]
    location = ["--data-dir", str(data), "--chroma-url", server.url]
    message = (f"error: the Chroma server at {server.url} is not reachable; nothing was lost; "
               "run the same command again when it is back")

    adding = cli(*location, "add", str(src), model=model)
    deadline = time.time() + 240
    while server.committed() < 3:  # a few notes are in (one item each): indexing is under way
        assert adding.poll() is None, adding.communicate()
        assert time.time() < deadline, "indexing did not start"
        time.sleep(0.1)
    server.kill()
    code, out, err = finished(adding)
    assert code == 3, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == message
    assert sum("error" in line for line in err.splitlines()) == 1

    for command in (["list"], ["search", "topic"]):  # while it is down
        code, out, err = finished(cli(*location, *command, model=model if command[0] == "search" else None))
        assert (code, out, err.strip().splitlines()[-1]) == (3, "", message), command
        assert "Traceback" not in err  # (before it: the model's loading bar, for `search`)

    server.start()  # same folder, same port: what was committed is there, the rest is resumed
    code, out, err = finished(cli(*location, "add", "-q", str(src), model=model))
    assert code == 0, err[-3000:]
    already = int(out.split(" already indexed")[0].rsplit(" ", 1)[-1])
    assert already >= 3 and f"indexed {FILES - already} file(s)" in out
    code, out, err = finished(cli(*location, "list", "--json"))
    assert code == 0 and sorted(row["source"] for row in json.loads(out)) == sorted(
        p.name for p in src.iterdir())


def test_the_app_says_so_in_the_chat_and_the_library_panel(server, tiny_model_dirs, tmp_path):
    from freeret_rag import FreeRet
    from freeret_rag.config import parse_config
    from freeret_rag.ui import FreeRetApp

    notes = tmp_path / "notes.txt"
    notes.write_text("The garden pond needs a pump check every spring.\n")
    config = parse_config(["--data-dir", str(tmp_path / "data"), "--chroma-url", server.url], {})
    app = FreeRetApp(config, engine=FreeRet.from_pretrained(tiny_model_dirs["llama"], max_new_tokens=8))
    *_, result = app.ingest([str(notes)])
    assert [s.state for s in result.files] == ["done"]
    [doc] = app.documents()
    server.kill()

    said = str(StoreUnreachableError(server.url))
    chat = list(app.chat({"text": "When is the pump checked?", "files": []}, [], []))
    answer = chat[-1][0][-1]["content"]
    assert said in answer and "Traceback" not in answer
    assert said in app.library_summary() and app.document_rows() == [] and app.document_choices() == []
    assert app.delete(doc.doc_id) == said
    *_, result = app.ingest([str(notes)])
    assert [(s.state, s.message) for s in result.files] == [("failed", said)]
    with pytest.raises(StoreUnreachableError):  # app.py turns this into one line and exit code 1
        FreeRetApp(config, engine=app.engine)
