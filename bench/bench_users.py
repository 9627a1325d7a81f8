"""Load test on loopback: N users with logins, each with a library of their own, asking at once.

    python bench/bench_users.py                       # 4 users x 20 questions, tiny offline Qwen2-VL
    python bench/bench_users.py --users 4 --questions 20 --model DIR [--app-flag=--demo ...]

Starts the real app (`python app.py --auth FILE`) in a subprocess on a free port, logs every user
in with gradio_client, uploads one file per user (a text file whose facts only that user has), then
runs the users concurrently, each asking its questions one after the other through the `/chat`
API. It prints the latency p50/p95 per question (from the request to the last streamed message),
the errors, the app process's memory (RSS before the questions, after them, and its peak), and
checks privacy from the answers themselves: every source of every answer must be one of the
asking user's own files, and `/documents` must list only those. Any other user's file in a source
or a listing is counted as a LEAK and the script exits 1.

The default model is a tiny random Qwen2-VL (built offline): its answers are noise, so the latency
measures the serving stack (queue, per-user library, search, rerank of a few candidates, a short
generation), not a real model's speed. Give `--model` for a real one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "1"}

# One made-up fact sheet per user: the words are the user's own, so a question can only be
# answered (and a source only found) from that user's file.
TOPICS = ["lighthouse", "orchard", "glacier", "bakery", "observatory", "vineyard", "harbour", "monastery"]


def fact_sheet(user: str, topic: str) -> str:
    lines = [f"{user}'s private notes about the {topic}."]
    for n in range(1, 21):
        lines.append(f"Fact {n}: the {topic} log of {user} records item {n} with code {user}-{topic}-{n * 7}.")
    return "\n".join(lines) + "\n"


def questions_for(topic: str, count: int) -> list[str]:
    return [f"What does the {topic} log record as fact {1 + n % 20}?" for n in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wait_up(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=3):
                return
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer on {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--model", help="model folder (default: a tiny random Qwen2-VL built offline)")
    parser.add_argument("--app-flag", action="append", default=[], help="extra flag for app.py (repeatable)")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="freeret-users-"))
    model = args.model
    if model is None:
        from freeret_rag.devtools.tiny_models import build_tiny_model

        model = str(build_tiny_model("qwen2_vl", work / "model"))
    users = [(f"user{n}", f"pw-{n}-{TOPICS[n % len(TOPICS)]}") for n in range(1, args.users + 1)]
    (work / "users.txt").write_text("".join(f"{name}:{password}\n" for name, password in users))
    own: dict[str, set[str]] = {}
    for n, (name, _) in enumerate(users, start=1):
        sheet = work / "uploads" / name / f"{name}-{TOPICS[n % len(TOPICS)]}.txt"
        sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.write_text(fact_sheet(name, TOPICS[n % len(TOPICS)]))
        own[name] = {sheet.name}

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                                "--model", model, "--data-dir", str(work / "data"), "--auth", str(work / "users.txt"),
                                "--concurrency", "1", *args.app_flag],
                               cwd=REPO, env={**os.environ, **OFFLINE_ENV}, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_up(url, process)
        clients = {name: Client(url, auth=(name, password), verbose=False, analytics_enabled=False,
                                download_files=False) for name, password in users}
        started = time.monotonic()
        for n, (name, _) in enumerate(users, start=1):
            sheet = work / "uploads" / name / next(iter(own[name]))
            rows = clients[name].predict([handle_file(str(sheet))], api_name="/add_files")
            if not rows or rows[-1]["state"] != "done":
                raise RuntimeError(f"{name}'s upload: {rows}")
        print(f"uploads: {len(users)} files in {time.monotonic() - started:.1f} s")

        leaks: list[str] = []
        for name, client in clients.items():
            listed = {row["file"] for row in client.predict(api_name="/documents")}
            if listed != own[name]:
                leaks.append(f"{name}'s /documents lists {sorted(listed - own[name]) or 'not its own file'}")

        rss_before, _ = rss_mib(process.pid)
        latencies: list[float] = []
        errors: list[str] = []
        answered = {name: 0 for name, _ in users}
        lock = threading.Lock()

        def ask_all(name: str, topic: str) -> None:
            client = clients[name]
            for question in questions_for(topic, args.questions):
                t0 = time.monotonic()
                try:
                    _, sources, _ = client.predict({"text": question, "files": []}, [], api_name="/chat")
                except Exception as error:  # noqa: BLE001 - counted and shown
                    with lock:
                        errors.append(f"{name}: {type(error).__name__}: {error}")
                    continue
                took = time.monotonic() - t0
                foreign = {row["file"] for row in sources or []} - own[name]
                with lock:
                    latencies.append(took)
                    answered[name] += 1
                    if foreign:
                        leaks.append(f"{name} was shown {sorted(foreign)} for {question!r}")

        threads = [threading.Thread(target=ask_all, args=(name, TOPICS[n % len(TOPICS)]))
                   for n, (name, _) in enumerate(users, start=1)]
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - t0
        rss_after, rss_peak = rss_mib(process.pid)
        load = os.getloadavg()
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{len(users)} users x {args.questions} questions, concurrently, in {wall:.1f} s "
              f"({len(latencies)} answered, {len(errors)} errors)")
        if latencies:
            print(f"latency per question: p50 {statistics.median(latencies):.2f} s, "
                  f"p95 {percentile(latencies, 0.95):.2f} s, max {max(latencies):.2f} s")
        print("answered per user: " + ", ".join(f"{name} {count}" for name, count in answered.items()))
        print(f"app RSS: {rss_before:.0f} MiB before the questions, {rss_after:.0f} MiB after "
              f"({rss_after - rss_before:+.0f} MiB), peak {rss_peak:.0f} MiB")
        for error in errors[:10]:
            print("ERROR", error)
        for leak in leaks[:20]:
            print("LEAK", leak)
        print(f"leaks: {len(leaks)} (a source or listing of another user's file)")
        return 1 if leaks or errors else 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()
        print(f"app log: {work / 'app.log'}")


if __name__ == "__main__":
    sys.exit(main())
