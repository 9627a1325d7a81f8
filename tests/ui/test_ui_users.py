"""A library per login and per demo session (issue 12, parts 1 and 2), over HTTP against the real app
(`python app.py`) in a subprocess on the tiny Qwen2-VL: what one user added is never listed,
searched, cited or served to another; the shared library is seen by all and deleted by none; demo
sessions are isolated, capped, and their libraries removed after the TTL. Expected folders are
computed here with hashlib, expected names and facts are the test's own files."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from ui_harness import OFFLINE_ENV, REPO_ROOT, AppServer, make_pdf

pytestmark = [pytest.mark.slow]

TINY_FLAGS = ["--top-k", "5", "--rerank-k", "2", "--sources", "3", "--max-answer-tokens", "4", "--min-relevance", "0"]


def client_for(server: AppServer, **kwargs):
    from gradio_client import Client

    return Client(server.url, verbose=False, analytics_enabled=False, download_files=False, **kwargs)


def signed_in(server: AppServer, user: str, password: str):
    """An httpx client with the login's cookie (as a browser has after the login form)."""
    import httpx

    http = httpx.Client(base_url=server.url, timeout=120)
    assert http.post("login", data={"username": user, "password": password}).status_code == 200
    return http


def ask(client, question: str) -> tuple[str, list[dict]]:
    """(the answer's messages as one text, the sources as data) of a /chat call."""
    job = client.submit({"text": question, "files": []}, [], api_name="/chat")
    list(job)
    chat, sources, _ = job.outputs()[-1]
    return " ".join(str(message["content"]) for message in chat), sources


def linked_files(text: str) -> set[str]:
    return {unquote(url.split("#")[0]) for url in re.findall(r'gradio_api/file=([^"\s)]+)', text)}


def user_folder(data: Path, login: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", login.lower()).strip("-")
    return data / "users" / f"{slug}-{hashlib.sha256(login.encode()).hexdigest()[:10]}"


def test_two_logins_see_only_their_own_library_and_the_shared_one(tiny_model_dirs, tmp_path):
    model = str(tiny_model_dirs["qwen2_vl"])
    data, shared = tmp_path / "data", tmp_path / "shared"
    handbook = shared / "originals" / "staff-handbook.txt"  # inside the shared folder: served from there
    handbook.parent.mkdir(parents=True)
    handbook.write_text("Staff handbook. The canteen opens at noon and serves lentil soup on Fridays.\n")
    indexed = subprocess.run([sys.executable, "-m", "freeret_rag", "--model", model, "--data-dir", str(shared),
                              "add", str(handbook)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                             env={**__import__("os").environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO_ROOT)})
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    secret = tmp_path / "ann-vault.txt"
    secret.write_text("Ann's vault. The vault code is 4417 zebra; the spare key hides under the blue flowerpot.\n")
    plan = make_pdf(tmp_path / "ann-plan.pdf", ["Ann's plan. Move the vault on Tuesday.", "Ann's plan, page 2."])
    users = tmp_path / "users.txt"
    users.write_text("ann:pw-ann\nbob:pw-bob\n")

    from gradio_client import handle_file

    with AppServer(["--model", model, "--data-dir", str(data), "--auth", str(users), "--shared-library", str(shared),
                    *TINY_FLAGS, "--sources", "6"], log_name="app-users.log") as server:
        ann, bob = client_for(server, auth=("ann", "pw-ann")), client_for(server, auth=("bob", "pw-bob"))
        ann_http, bob_http = signed_in(server, "ann", "pw-ann"), signed_in(server, "bob", "pw-bob")
        report = ann.predict([handle_file(str(secret)), handle_file(str(plan))], api_name="/add_files")
        assert [(row["file"], row["state"]) for row in report] == [("ann-vault.txt", "done"), ("ann-plan.pdf", "done")]

        # Listings: each login its own file, both the shared one (read-only).
        ann_docs = {d["file"]: d for d in ann.predict(api_name="/documents")}
        bob_docs = {d["file"]: d for d in bob.predict(api_name="/documents")}
        assert set(ann_docs) == {"ann-vault.txt", "ann-plan.pdf", "staff-handbook.txt"}
        assert set(bob_docs) == {"staff-handbook.txt"}
        assert ann_docs["staff-handbook.txt"]["read_only"] and bob_docs["staff-handbook.txt"]["read_only"]
        assert "read_only" not in ann_docs["ann-vault.txt"]
        expected_kept = user_folder(data, "ann") / "files" / hashlib.sha256(secret.read_bytes()).hexdigest()[:16] \
            / "ann-vault.txt"
        assert expected_kept.read_bytes() == secret.read_bytes()  # ann's folder, under data/users/

        # Search: ann's answer cites her file (and the shared one); bob's never shows hers.
        text, sources = ask(ann, "What is the vault code?")
        assert {s["file"] for s in sources} == {"ann-vault.txt", "ann-plan.pdf", "staff-handbook.txt"}
        ann_links = linked_files(text)
        page_images = {s[key] for s in sources if s["file"] == "ann-plan.pdf" for key in ("asset_url", "thumbnail_url")}
        assert len(page_images) >= 2 and all(str(user_folder(data, "ann")) in unquote(url) for url in page_images)
        ann_file = next(s["file_url"] for s in sources if s["file"] == "ann-vault.txt")
        assert Path(unquote(ann_file.split("=", 1)[1])).resolve() == expected_kept.resolve()
        text, sources = ask(bob, "What is the vault code?")
        assert {s["file"] for s in sources} == {"staff-handbook.txt"}
        for needle in ("ann-vault", "4417", "zebra", str(user_folder(data, "ann"))):
            assert needle not in text, (needle, text[max(0, text.find(needle) - 300):text.find(needle) + 300])
        assert {link for link in ann_links if "ann" in link}
        assert not {link for link in linked_files(text) if "ann" in link}

        # Files: ann's kept original is served to ann, 404 to bob and without a login.
        assert ann_http.get(ann_file).status_code == 200
        assert ann_http.get(ann_file).content == secret.read_bytes()
        assert bob_http.get(ann_file).status_code == 404
        assert bob_http.head(ann_file).status_code == 404
        for url in page_images:  # the PDF's page images and thumbnails too
            assert ann_http.get(url).status_code == 200 and bob_http.get(url).status_code == 404
        import httpx

        assert httpx.get(server.url + ann_file, timeout=60).status_code == 404
        handbook_url = next(s["file_url"] for s in ask(bob, "When does the canteen open?")[1]
                            if s["file"] == "staff-handbook.txt")
        assert bob_http.get(handbook_url).status_code == 200 and ann_http.get(handbook_url).status_code == 200

        # The page: bob's has nothing of ann's (its first values nor its config).
        for path in ("", "config"):
            assert "ann-vault" not in bob_http.get(path).text

        # Deleting: bob cannot delete ann's document nor the shared one; ann can delete hers.
        assert bob.predict(ann_docs["ann-vault.txt"]["doc_id"], api_name="/delete") == \
            "That document is no longer in the library."
        assert bob.predict(bob_docs["staff-handbook.txt"]["doc_id"], api_name="/delete") == \
            "staff-handbook.txt is in the shared library (read-only): it cannot be deleted here."
        said = ann.predict(ann_docs["staff-handbook.txt"]["doc_id"], api_name="/delete")
        assert said.endswith("read-only): it cannot be deleted here.")
        assert {d["file"] for d in ann.predict(api_name="/documents")} == {"ann-vault.txt", "ann-plan.pdf",
                                                                          "staff-handbook.txt"}
        assert handbook.is_file() and (shared / "chroma").is_dir()
        assert ann.predict(ann_docs["ann-vault.txt"]["doc_id"], api_name="/delete") == "Deleted ann-vault.txt."
        assert ann_http.get(ann_file).status_code == 404 and not expected_kept.exists()


def demo_folder(data: Path, session: str) -> Path:
    return data / "demo" / hashlib.sha256(("demo:" + session).encode()).hexdigest()[:24]


def test_demo_sessions_are_isolated_capped_and_removed_after_the_ttl(tiny_model_dirs, tmp_path):
    from gradio_client import handle_file

    model = str(tiny_model_dirs["qwen2_vl"])
    data = tmp_path / "data"
    notes = [tmp_path / f"note-{n}.txt" for n in range(3)]
    for n, note in enumerate(notes):
        note.write_text(f"Note {n}. The parrot number {n} is called {['Kiwi', 'Mango', 'Pepper'][n]}.\n")
    with AppServer(["--model", model, "--data-dir", str(data), "--demo", "--demo-ttl-minutes", "0.1",
                    "--demo-max-files", "2", *TINY_FLAGS], log_name="app-demo.log") as server:
        a, b = client_for(server), client_for(server)
        assert a.session_hash != b.session_hash
        report = a.predict([handle_file(str(notes[0]))], api_name="/add_files")
        assert [(row["file"], row["state"]) for row in report] == [("note-0.txt", "done")]
        folder_a = demo_folder(data, a.session_hash)
        assert (folder_a / "files").is_dir() and any((folder_a / "files").rglob("note-0.txt"))

        # B sees nothing of A's, and its third file is over the cap (2 files).
        assert b.predict(api_name="/documents") == []
        report = b.predict([handle_file(str(notes[1])), handle_file(str(notes[2]))], api_name="/add_files")
        assert [(row["file"], row["state"]) for row in report] == [("note-1.txt", "done"), ("note-2.txt", "done")]
        report = b.predict([handle_file(str(notes[0]))], api_name="/add_files")
        assert [(row["file"], row["state"], row["message"]) for row in report] == [
            ("note-0.txt", "skipped", "this demo library holds at most 2 files: delete one to add another")]
        assert {d["file"] for d in b.predict(api_name="/documents")} == {"note-1.txt", "note-2.txt"}
        assert [d["file"] for d in a.predict(api_name="/documents")] == ["note-0.txt"]
        _, sources = ask(b, "What is the parrot called?")
        assert {s["file"] for s in sources} <= {"note-1.txt", "note-2.txt"} and sources
        _, sources = ask(a, "What is the parrot called?")
        assert {s["file"] for s in sources} == {"note-0.txt"}
        a_file = sources[0]["file_url"]

        # The sample library, one click away: read-only, searched, its files served.
        said = b.predict(api_name="/try_samples")
        assert "Sample library added" in str(said)
        listed = {d["file"]: d for d in b.predict(api_name="/documents")}
        samples = {p.name for p in (REPO_ROOT / "assets" / "samples").iterdir() if p.suffix != ".md"}
        assert set(listed) == {"note-1.txt", "note-2.txt"} | samples
        assert all(listed[name].get("read_only") for name in samples)
        assert {d["file"] for d in a.predict(api_name="/documents")} == {"note-0.txt"}  # A did not ask
        _, sources = ask(b, "What do ladybirds eat?")
        assert {s["file"] for s in sources} & samples

        # A goes quiet: after the TTL (6 s) its library is removed, its file no longer served.
        import httpx

        # A's file: served with A's demo cookie (gradio_client keeps the one the app set), not with B's.
        assert "freeret-demo" in a.cookies and a.cookies["freeret-demo"] != b.cookies.get("freeret-demo")
        assert httpx.get(server.url + a_file, cookies=a.cookies, timeout=60).status_code == 200
        assert httpx.get(server.url + a_file, cookies=b.cookies, timeout=60).status_code == 404
        assert httpx.get(server.url + a_file, timeout=60).status_code == 404
        time.sleep(8)
        b.predict(api_name="/documents")  # any request sweeps (a background sweep runs too)
        assert not folder_a.exists()
        assert httpx.get(server.url + a_file, cookies=a.cookies, timeout=60).status_code == 404
        assert demo_folder(data, b.session_hash).is_dir()
        assert a.predict(api_name="/documents") == []  # A comes back to an empty library


def test_a_demo_tab_whose_heartbeat_drops_and_comes_back_keeps_its_library(tiny_model_dirs, tmp_path):
    import httpx
    from gradio_client import handle_file

    model = str(tiny_model_dirs["qwen2_vl"])
    data = tmp_path / "data"
    note = tmp_path / "note-0.txt"
    note.write_text("Note 0. The parrot is called Kiwi.\n")
    with AppServer(["--model", model, "--data-dir", str(data), "--demo", *TINY_FLAGS],
                   log_name="app-demo-heartbeat.log") as server:
        a = client_for(server)
        report = a.predict([handle_file(str(note))], api_name="/add_files")
        assert [(row["file"], row["state"]) for row in report] == [("note-0.txt", "done")]
        # The tab's heartbeat (an SSE stream) is cut after its first message, then the tab goes on.
        with httpx.stream("GET", f"{server.url}gradio_api/heartbeat/{a.session_hash}", timeout=60) as beat:
            next(beat.iter_lines())
        for _ in range(20):  # the unload runs as a background task of the closed stream
            if not demo_folder(data, a.session_hash).exists():
                break
            time.sleep(0.5)
        assert [d["file"] for d in a.predict(api_name="/documents")] == ["note-0.txt"]
