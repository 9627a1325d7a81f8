"""Deletes that delete (issue 12, item 3), over HTTP against the real app (`python app.py`) in a
subprocess on the tiny Qwen2-VL: the file routes serve a document's kept original and page images
while it is in the library, and 404 once it is deleted (by the API or by the CLI while the app
runs); no other file under the data folder is ever served. The expected paths are built here from
the file's SHA-256 (hashlib) and the asset folder on disk, not by the app's code."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from ui_harness import GUIDE_PAGES, REPO_ROOT, AppServer, make_pdf, shared_samples

pytestmark = [pytest.mark.slow]


def kept_path(data: Path, source: Path) -> Path:
    """Where the app keeps an upload: data/files/<first 16 hex of its SHA-256>/<name>."""
    return data / "files" / hashlib.sha256(source.read_bytes()).hexdigest()[:16] / source.name


def url_of(path: Path | str) -> str:
    return "gradio_api/file=" + quote(str(path), safe="/")


def raw_status(server: AppServer, method: str, target: str) -> int:
    """Status of a request whose target is sent exactly as written (httpx would remove `..` segments)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.request(method, target)
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_deleted_documents_files_are_gone_and_never_served(tiny_model_dirs, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    data = tmp_path / "data"
    pdf = make_pdf(tmp_path / "garden-guide.pdf", GUIDE_PAGES)
    bird = Path(shutil.copyfile(shared_samples() / "LadyBird.jpg", tmp_path / "LadyBird.jpg"))
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(data), "--top-k", "5",
                    "--rerank-k", "2", "--sources", "2", "--max-answer-tokens", "4", "--min-relevance", "0"],
                   log_name="app-files.log") as server, httpx.Client(base_url=server.url, timeout=120) as http:
        client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
        received = http.post("gradio_api/upload", files={"files": (pdf.name, pdf.read_bytes())}).json()[0]
        assert http.get(url_of(received)).content == pdf.read_bytes()  # Gradio's own copy of the upload
        report = client.predict([handle_file(str(pdf)), handle_file(str(bird))], api_name="/add_files")
        assert {row["file"]: row["state"] for row in report} == {"garden-guide.pdf": "done", "LadyBird.jpg": "done"}
        ids = {row["file"]: row["doc_id"] for row in client.predict(api_name="/documents")}
        files = {}
        for source in (pdf, bird):
            doc_id = ids[source.name]
            assert doc_id == hashlib.sha256(source.read_bytes()).hexdigest()[:16]
            assets = sorted(p for p in (data / "assets" / doc_id).rglob("*") if p.is_file())
            assert assets, f"no page image of {source.name}"
            files[source.name] = [kept_path(data, source).resolve(), *(a.resolve() for a in assets)]
        for path in files["garden-guide.pdf"] + files["LadyBird.jpg"]:
            response = http.get(url_of(path))
            assert response.status_code == 200, path
            assert response.content == path.read_bytes()
        assert http.head(url_of(files["garden-guide.pdf"][0])).status_code == 200

        # The links an answer shows are among those files (and are served).
        job = client.submit({"text": "Which beetles eat aphids?", "files": []}, [], api_name="/chat")
        list(job)
        answer = str(job.outputs()[-1][0][-1]["content"])
        linked = {Path(unquote(url.split("#")[0]))
                  for url in re.findall(r'(?:src|href|poster)="gradio_api/file=([^"]+)"', answer)}
        assert linked and linked <= set(files["garden-guide.pdf"] + files["LadyBird.jpg"]), answer
        assert all(http.get(url_of(path)).status_code == 200 for path in linked)

        # Files under the data folder that are no document's: 404, whatever the spelling.
        stray = kept_path(data, pdf).parent / "same-bytes-other-name.pdf"
        shutil.copyfile(pdf, stray)
        secret = data / "notes.txt"
        secret.write_text("not a document")
        page = files["garden-guide.pdf"][1]
        for wanted in (str(stray), str(secret), str(data / "chroma.sqlite3"), f"{page.parent}/%2E%2E/%2E%2E/notes.txt",
                       f"{page.parent}/../../notes.txt", os.path.relpath(secret, REPO_ROOT)):  # relative: to its cwd
            assert raw_status(server, "GET", "/gradio_api/file=" + wanted) == 404, wanted
        assert raw_status(server, "GET", "/gradio_api/file/" + str(stray)) == 404  # the older route
        assert raw_status(server, "GET", "/gradio_api/file/" + os.path.relpath(stray, REPO_ROOT)) == 404
        assert raw_status(server, "GET", "/gradio_api/file=" + os.path.relpath(page, REPO_ROOT)) == 200

        # Deleted through the API: the kept original and the page images are gone and answer 404.
        assert client.predict(ids["garden-guide.pdf"], api_name="/delete") == "Deleted garden-guide.pdf."
        for path in files["garden-guide.pdf"] + [stray]:
            assert not path.exists(), path
            assert http.get(url_of(path)).status_code == 404, path
            assert http.head(url_of(path)).status_code == 404, path
        assert not (data / "files" / ids["garden-guide.pdf"]).exists()
        assert not Path(received).exists() and http.get(url_of(received)).status_code == 404
        assert all(http.get(url_of(path)).status_code == 200 for path in files["LadyBird.jpg"])

        # Deleted by the CLI while the app runs: the same.
        deleted = subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(data), "delete",
                                  "LadyBird.jpg"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"})
        assert deleted.returncode == 0, deleted.stderr[-2000:]
        for path in files["LadyBird.jpg"]:
            assert not path.exists(), path
            assert http.get(url_of(path)).status_code == 404, path
        assert client.predict(api_name="/documents") == []
        assert bird.is_file() and pdf.is_file()  # the user's own files, uploaded from here, stay
