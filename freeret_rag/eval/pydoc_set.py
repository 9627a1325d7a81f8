"""The text eval set: real Python standard-library docstrings (read with `inspect.getdoc`, as pydoc
shows them) as the corpus, with hand-written paraphrased queries.

Nobody on this project wrote the passages. Queries describe a need in other words than the
docstring (they avoid the function's name and the docstring's distinctive phrases). Qrels were made
by pooling: for each query the top 10 of BM25 and of all-MiniLM-L6-v2 (plus the intended target)
were read by hand; grade 2 = answers the need, grade 1 = partly answers it (a close variant).
The corpus is generated from the running Python (3.11 when it was checked in); the checked-in
corpus.jsonl is authoritative.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from .datasets import write_beir

MODULES = (
    "os os.path shutil json re itertools functools collections string textwrap math statistics random "
    "datetime time pathlib subprocess tempfile glob fnmatch csv zipfile gzip hashlib base64 urllib.parse "
    "heapq bisect copy pickle struct difflib uuid secrets calendar shlex html unicodedata zlib tarfile "
    "filecmp locale operator"
).split()
CLASSES_WITH_METHODS = ("builtins.str", "builtins.list", "builtins.dict", "builtins.set", "pathlib.Path",
                        "datetime.datetime", "collections.Counter", "collections.deque")
MIN_CHARS = 60
MAX_CHARS = 800


def passage(doc: str) -> str:
    """The docstring's leading paragraphs, at most MAX_CHARS (cut at a paragraph or line end)."""
    if len(doc) <= MAX_CHARS:
        return doc
    cut = doc.rfind("\n\n", 0, MAX_CHARS)
    cut = cut if cut > MIN_CHARS else doc.rfind("\n", 0, MAX_CHARS)
    return doc[: cut if cut > MIN_CHARS else MAX_CHARS].rstrip()


def documented(obj: Any) -> str | None:
    doc = inspect.getdoc(obj)
    return passage(doc) if doc and len(doc) >= MIN_CHARS else None


def public_members(module: Any) -> list[tuple[str, Any]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    members = []
    for name in sorted(names):
        obj = getattr(module, name, None)
        home = getattr(obj, "__module__", "") or ""
        own = home.lstrip("_") in (module.__name__, module.__name__.split(".")[-1]) or module.__name__ == "os"
        if (inspect.isroutine(obj) or inspect.isclass(obj)) and own:
            members.append((name, obj))
    return members


def stdlib_passages() -> dict[str, str]:
    """{qualified name: passage} for module docs, public functions/classes, and selected methods."""
    passages: dict[str, str] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        if doc := documented(module):
            passages[module_name] = doc
        for name, obj in public_members(module):
            if doc := documented(obj):
                passages.setdefault(f"{module_name}.{name}", doc)
    for qualified in CLASSES_WITH_METHODS:
        module_name, _, class_name = qualified.rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        prefix = class_name if module_name == "builtins" else qualified
        for name, obj in sorted(vars(cls).items()):
            if not name.startswith("_") and inspect.isroutine(obj) and (doc := documented(obj)):
                passages.setdefault(f"{prefix}.{name}", doc)
    return passages


# (query id, query, {corpus id: grade}): grade 2 answers the need, 1 is a close variant / partial answer.
QUERIES: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("q01", "copy a whole folder with all its subfolders to a new location", {"shutil.copytree": 2}),
    ("q02", "delete a folder and everything inside it", {"shutil.rmtree": 2}),
    ("q03", "find where an executable program is located on the search path", {"shutil.which": 2, "os.get_exec_path": 1}),
    ("q04", "how much free space is left on a drive", {"shutil.disk_usage": 2, "os.statvfs": 1}),
    ("q05", "pack a folder into a zip file or a tarball", {"shutil.make_archive": 2, "zipfile.ZipFile": 1, "tarfile.open": 1}),
    ("q06", "create nested folders, including any missing parent folders", {"os.makedirs": 2, "os.mkdir": 1}),
    ("q07", "visit every folder below a starting point and list the files in each one",
     {"os.walk": 2, "os.fwalk": 2, "pathlib.Path.rglob": 1, "glob.glob": 1}),
    ("q08", "turn a path that begins with a tilde into the user's home folder",
     {"os.path.expanduser": 2, "pathlib.Path.expanduser": 2}),
    ("q09", "get the file suffix such as .txt from a file name", {"os.path.splitext": 2}),
    ("q10", "rename a file and overwrite the target if it already exists",
     {"os.replace": 2, "pathlib.Path.replace": 2, "os.rename": 1, "pathlib.Path.rename": 1,
      "shutil.move": 1}),
    ("q11", "produce unpredictable bytes suitable for encryption keys", {"os.urandom": 2, "secrets.token_bytes": 2, "secrets.token_hex": 1, "secrets": 1,
      "random.SystemRandom": 1}),
    ("q12", "how many processors does this machine have", {"os.cpu_count": 2, "os.sched_getaffinity": 1}),
    ("q13", "width and height of the console window in characters",
     {"os.get_terminal_size": 2, "shutil.get_terminal_size": 2, "os.terminal_size": 1}),
    ("q14", "average number of processes waiting to run over the past few minutes", {"os.getloadavg": 2}),
    ("q15", "set the default permission bits mask applied to newly created files", {"os.umask": 2}),
    ("q16", "make a soft link that points to another file", {"os.symlink": 2, "pathlib.Path.symlink_to": 2}),
    ("q17", "parse JSON text into Python dicts and lists", {"json.loads": 2, "json.load": 1}),
    ("q18", "convert a Python object into a JSON string", {"json.dumps": 2, "json.dump": 1}),
    ("q19", "replace every match of a regular expression in a piece of text", {"re.sub": 2, "re.subn": 2}),
    ("q20", "cut a string into pieces wherever a regex pattern occurs", {"re.split": 2}),
    ("q21", "check that the entire string matches a pattern, not just its beginning",
     {"re.fullmatch": 2, "re.match": 1}),
    ("q22", "bundle consecutive items that share the same key into runs", {"itertools.groupby": 2}),
    ("q23", "take only a range of items from an iterator without turning it into a list", {"itertools.islice": 2}),
    ("q24", "iterate over each element together with the one that follows it", {"itertools.pairwise": 2}),
    ("q25", "zip sequences of unequal length, padding the shorter ones", {"itertools.zip_longest": 2}),
    ("q26", "running totals of a sequence of numbers", {"itertools.accumulate": 2}),
    ("q27", "every combination of one choice from each of several lists, like nested loops",
     {"itertools.product": 2}),
    ("q28", "remember the results of an expensive function so repeated calls are fast",
     {"functools.lru_cache": 2, "functools.cache": 2}),
    ("q29", "pre-fill some arguments of a function to get a new callable",
     {"functools.partial": 2, "functools.partialmethod": 1}),
    ("q30", "combine all items of a list into one value with a two-argument function", {"functools.reduce": 2, "itertools.accumulate": 1}),
    ("q31", "pick which implementation of a function runs based on the type of its first argument",
     {"functools.singledispatch": 2, "functools.singledispatchmethod": 1}),
    ("q32", "keep the name and docstring of the original function when writing a decorator",
     {"functools.wraps": 2, "functools.update_wrapper": 2}),
    ("q33", "the few most frequent elements and how often each appears",
     {"collections.Counter.most_common": 2, "collections.Counter": 1, "statistics.mode": 1,
      "statistics.multimode": 1}),
    ("q34", "a mapping that creates a value automatically when a missing key is read",
     {"collections.defaultdict": 2, "dict.setdefault": 1}),
    ("q35", "a lightweight tuple type whose fields can be accessed by name", {"collections.namedtuple": 2}),
    ("q36", "shift the elements of a double-ended queue by n positions", {"collections.deque.rotate": 2}),
    ("q37", "look keys up in several dictionaries in order, as one combined view", {"collections.ChainMap": 2}),
    ("q38", "strip the indentation shared by all lines of a multi-line string", {"textwrap.dedent": 2}),
    ("q39", "trim text to a maximum length and add a marker where it was cut", {"textwrap.shorten": 2}),
    ("q40", "test whether two floats are approximately equal within a tolerance", {"math.isclose": 2}),
    ("q41", "add up many floats without losing precision", {"math.fsum": 2}),
    ("q42", "number of ways to pick k things out of n when order does not matter",
     {"math.comb": 2, "math.perm": 1, "itertools.combinations": 1}),
    ("q43", "Euclidean length of a vector given its coordinates", {"math.hypot": 2, "math.dist": 1}),
    ("q44", "the middle value of a list of numbers",
     {"statistics.median": 2, "statistics.median_low": 1, "statistics.median_high": 1,
      "statistics.median_grouped": 1}),
    ("q45", "split a data set into quartiles or percentiles", {"statistics.quantiles": 2}),
    ("q46", "fit a straight line through points by least squares", {"statistics.linear_regression": 2}),
    ("q47", "how strongly two variables move together linearly",
     {"statistics.correlation": 2, "statistics.covariance": 1}),
    ("q48", "pick several random items from a list, with repeats allowed and optional weights",
     {"random.choices": 2}),
    ("q49", "draw distinct random elements without putting them back", {"random.sample": 2}),
    ("q50", "make a random number generator reproducible between runs", {"random.seed": 2}),
    ("q51", "drop a leading substring if the text begins with it", {"str.removeprefix": 2}),
    ("q52", "pad a number string with leading zeros", {"str.zfill": 2, "str.rjust": 1}),
    ("q53", "lowercase text aggressively for case-insensitive comparisons", {"str.casefold": 2}),
    ("q54", "split text at the first occurrence of a separator into the part before, the separator and the rest",
     {"str.partition": 2, "str.rpartition": 1}),
    ("q55", "replace tab characters with spaces", {"str.expandtabs": 2}),
    ("q56", "order the items of a list in place by a key function", {"list.sort": 2}),
    ("q57", "elements that belong to one set or the other but not to both",
     {"set.symmetric_difference": 2, "set.symmetric_difference_update": 1}),
    ("q58", "create an empty file if it is not there yet", {"pathlib.Path.touch": 2, "os.mknod": 1}),
    ("q59", "find matching files in all subdirectories recursively",
     {"pathlib.Path.rglob": 2, "glob.glob": 1, "glob.iglob": 1, "pathlib.Path.glob": 1, "os.walk": 1}),
    ("q60", "turn a date written as text into a datetime object, given its layout",
     {"datetime.datetime.strptime": 2, "time.strptime": 1}),
    ("q61", "high-resolution timer for measuring how long code takes",
     {"time.perf_counter": 2, "time.perf_counter_ns": 2, "time.monotonic_ns": 1, "time.process_time": 1}),
    ("q62", "format the current time as text using format codes", {"time.strftime": 2}),
    ("q63", "execute an external command and capture what it prints",
     {"subprocess.run": 2, "subprocess.check_output": 2, "subprocess.getoutput": 2,
      "subprocess.getstatusoutput": 2, "subprocess.Popen": 1}),
    ("q64", "make a scratch directory with a unique name",
     {"tempfile.mkdtemp": 2, "tempfile.TemporaryDirectory": 2}),
    ("q65", "convert a shell wildcard pattern into a regular expression", {"fnmatch.translate": 2, "fnmatch": 1}),
    ("q66", "guess which delimiter a comma-separated-values file uses", {"csv.Sniffer": 2}),
    ("q67", "check whether a file is a zip archive", {"zipfile.is_zipfile": 2}),
    ("q68", "derive a key from a password with many rounds of hashing", {"hashlib.pbkdf2_hmac": 2}),
    ("q69", "compute a hash of a file's contents", {"hashlib.file_digest": 2}),
    ("q70", "encode binary data as base64 that can be put safely into a web address",
     {"base64.urlsafe_b64encode": 2, "secrets.token_urlsafe": 1}),
    ("q71", "build the ?a=1&b=2 part of a web address from a dictionary", {"urllib.parse.urlencode": 2}),
    ("q72", "percent-escape special characters in a piece of a URL",
     {"urllib.parse.quote": 2, "urllib.parse.quote_plus": 2, "urllib.parse.quote_from_bytes": 1}),
    ("q73", "resolve a relative link against a base web address", {"urllib.parse.urljoin": 2}),
    ("q74", "read the parameters of a URL query string into a dictionary",
     {"urllib.parse.parse_qs": 2, "urllib.parse.parse_qsl": 1}),
    ("q75", "get the n biggest items of a collection", {"heapq.nlargest": 2}),
    ("q76", "combine several already sorted streams into one sorted stream lazily", {"heapq.merge": 2}),
    ("q77", "insert into a sorted list while keeping it in order",
     {"bisect.insort": 2, "bisect.insort_left": 2, "bisect.insort_right": 2}),
    ("q78", "duplicate an object including all the objects nested inside it", {"copy.deepcopy": 2, "copy": 1}),
    ("q79", "convert values into a binary byte string laid out like a C struct", {"struct.pack": 2, "struct": 1, "struct.pack_into": 1}),
    ("q80", "suggest similar words for a misspelled input", {"difflib.get_close_matches": 2}),
    ("q81", "show the changes between two versions of a text file in patch format",
     {"difflib.unified_diff": 2, "difflib.context_diff": 1, "difflib.ndiff": 1}),
    ("q82", "generate a deterministic identifier from a namespace and a name", {"uuid.uuid5": 2, "uuid.uuid3": 2}),
    ("q83", "how many days a given month has", {"calendar.monthrange": 2}),
    ("q84", "count the leap years between two years", {"calendar.leapdays": 2}),
    ("q85", "make text safe to embed in an HTML page", {"html.escape": 2}),
    ("q86", "bring unicode strings to a canonical composed or decomposed form", {"unicodedata.normalize": 2}),
    ("q87", "what a character is officially called in the Unicode standard", {"unicodedata.name": 2}),
    ("q88", "check whether two files have the same contents", {"filecmp.cmp": 2}),
    ("q89", "format an amount as money following the regional settings", {"locale.currency": 2}),
    ("q90", "a callable that fetches a field by index or key, handy as a sort key", {"operator.itemgetter": 2}),
    ("q91", "follow symbolic links to get the true absolute location of a file",
     {"os.path.realpath": 2, "pathlib.Path.resolve": 2}),
    ("q92", "shrink a block of bytes into gzip format in memory", {"gzip.compress": 2, "zlib.compress": 1}),
)


def build_pydoc(out: Path) -> None:
    """Write the set in BEIR layout: corpus {_id, title, text} with the qualified name as title."""
    passages = stdlib_passages()
    missing = sorted({doc for *_, grades in QUERIES for doc in grades if doc not in passages})
    if missing:
        raise RuntimeError(f"Python {sys.version.split()[0]} lacks judged passages {missing}; use Python 3.11")
    write_beir(out, ({"_id": name, "title": name, "text": text} for name, text in passages.items()),
               ({"_id": qid, "text": text} for qid, text, _ in QUERIES), {qid: grades for qid, _, grades in QUERIES})
