"""The rules of the command-line contract, each on the real CLI in a subprocess with a real store.

- no silent empty store: read-only commands on a missing store exit 1 and create nothing;
- a second ingest reports "0 new ... N unchanged" and where it stored;
- model-loading progress stays off stderr unless --verbose;
- human output escapes control characters from file names and text;
- usage errors (exit 2): --k < 1, --image that is not an image, empty query/search, short or
  ambiguous asset id prefixes, delete without --yes when nobody can confirm;
- errors are one line without a traceback; --json keeps stdout empty on errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from mmrag_li.assets import AssetIdError, AssetNotFoundError, MIN_ASSET_PREFIX, resolve_asset_id
from mmrag_li.errors import MMRAGError
from tests.e2e.conftest import CLI_ENV, EVIL_NAME, EXAMPLES, mmrag

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line_error(proc) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


# ---- no silent empty store ---------------------------------------------------------------------
READ_ONLY = [
    ("search", "cat"),
    ("query", "What is the total?"),
    ("inspect", "0123456789abcdef"),
    ("stats",),
    ("delete", "0123456789abcdef", "--yes"),
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=[a[0] for a in READ_ONLY])
def test_read_only_commands_on_a_missing_store_exit_1_and_create_nothing(argv, tmp_path):
    missing = tmp_path / "typo" / "store"
    for json_flag in ([], ["--json"]):
        proc = mmrag(*argv, "--store", str(missing), *json_flag)
        assert proc.returncode == 1, proc.stderr
        err = one_line_error(proc)
        assert f"no store at {missing}" in err and "run `mmrag ingest` first" in err
        assert proc.stdout == ""
        assert not missing.exists() and not missing.parent.exists()


def test_an_empty_folder_is_not_a_store_and_stays_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = mmrag("stats", "--json", env=dict(CLI_ENV, MMRAG_STORE=str(empty)))  # store from the environment
    assert proc.returncode == 1 and "no store at" in proc.stderr
    assert list(empty.iterdir()) == []
    # ./.mmrag is the default: nothing appears in the working directory either
    proc = mmrag("search", "cat", cwd=tmp_path)
    assert proc.returncode == 1 and "no store at .mmrag" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---- ingest reports -------------------------------------------------------------------------------
def test_second_ingest_says_nothing_new_and_where_it_stored(ingested, store):
    proc = mmrag("ingest", str(ingested.data), "--store", str(store), "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    n = len(ingested.files)
    assert re.search(r"^0 new\b", out, re.M), out
    assert f"{n} unchanged" in out and "0 failed" in out, out
    assert "Ingested" not in out
    assert str(store.resolve()) in out  # where it stored
    assert "nodes added: none" in out


def test_ingest_failure_is_exit_3_and_names_the_file_escaped(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "fine.md").write_text("# Fine\n\nA perfectly ordinary note about gardening.\n")
    (folder / "bad\x1b]0;pwned\x07.png").write_bytes(b"not a png at all, just text pretending")
    proc = mmrag("ingest", str(folder), "--store", str(tmp_path / "st"), "-q")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert not RAW_CONTROL.search(proc.stdout), repr(proc.stdout)
    assert "1 failed" in proc.stdout and "FAILED 1 file(s)" in proc.stdout
    assert "bad\\x1b]0;pwned\\x07.png" in proc.stdout  # the name, escaped, not executed


def test_model_loading_progress_shows_only_with_verbose(tmp_path):
    # a search no longer loads torch models (numpy query encoder); ingest does: the document encoder
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nThe greenhouse thermostat is set to 21 degrees.\n")
    quiet = mmrag("ingest", str(folder), "--store", str(tmp_path / "quiet"), "-q")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" not in quiet.stderr and "it/s]" not in quiet.stderr, quiet.stderr[-2000:]
    loud = mmrag("ingest", str(folder), "--store", str(tmp_path / "loud"), "--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Loading weights" in loud.stderr  # the models' own bars, asked for


# ---- human output escapes control characters -----------------------------------------------------
def test_human_output_escapes_control_characters(ingested, store):
    evil = ingested.data / EVIL_NAME
    for argv in (("inspect", str(evil)), ("search", "zebra marmalade access code"), ("stats",),
                 ("query", "What is the zebra marmalade access code?", "--extractive")):
        proc = mmrag(*argv, "--store", str(store))
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
        assert not RAW_CONTROL.search(proc.stdout), (argv, repr(proc.stdout[:2000]))
        if argv[0] != "stats":  # the name is shown (query: in the evidence list), escaped
            assert "evil\\x1b[31mred\\x07.md" in proc.stdout, (argv, proc.stdout[:2000])
        if argv[0] == "search":  # models loaded: their progress bars stay off stderr
            assert "Loading weights" not in proc.stderr and "it/s]" not in proc.stderr, proc.stderr[-2000:]
    # --json keeps the exact name (JSON escapes control characters itself)
    proc = mmrag("inspect", str(evil), "--store", str(store), "--json")
    assert json.loads(proc.stdout)["source"].endswith(EVIL_NAME)


# ---- usage errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("search", "cat", "--k", "0"), ("search", "cat", "--k", "-3"), ("search", "cat", "--k", "many"),
    ("query", "What is the total?", "--k", "0"), ("query", "What is the total?", "--k", "-1"),
], ids=["search-k0", "search-k-neg", "search-k-text", "query-k0", "query-k-neg"])
def test_k_below_one_is_a_usage_error(argv, store):
    proc = mmrag(*argv, "--store", str(store), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--k" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_query_images_are_usage_errors(tmp_path, store):
    text_file = tmp_path / "notes.png"  # named like an image, holds text
    text_file.write_text("just words")
    cases = {
        str(EXAMPLES / "delivery_note_scan.pdf"): "is a PDF",
        str(EXAMPLES): "is a directory",
        str(text_file): "is not an image",
        str(tmp_path / "missing.jpg"): "no such file",
    }
    for cmd in (("search",), ("query", "What is this?")):
        for path, why in cases.items():
            proc = mmrag(*cmd, "--image", path, "--store", str(store), "--json")
            assert proc.returncode == 2, (cmd, path, proc.stderr)
            err = one_line_error(proc)
            assert why in err and "--image" in err and proc.stdout == ""


@pytest.mark.parametrize("argv", [("query", ""), ("query", "   "), ("search", ""), ("search",)],
                         ids=["query-empty", "query-blank", "search-empty", "search-none"])
def test_empty_query_and_search_agree(argv, store):
    proc = mmrag(*argv, "--store", str(store), "--json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and one_line_error(proc)


def test_asset_id_prefix_rules(ingested, store, asset_id):
    full = asset_id("invoice_4711.png")
    assert len(full) > MIN_ASSET_PREFIX
    # a unique prefix of the minimum length works
    proc = mmrag("inspect", full[:MIN_ASSET_PREFIX], "--store", str(store), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["asset_id"] == full
    # shorter is a usage error, for inspect and delete alike (nothing is deleted)
    for cmd in (("inspect",), ("delete", "--yes")):
        proc = mmrag(cmd[0], full[: MIN_ASSET_PREFIX - 1], *cmd[1:], "--store", str(store))
        assert proc.returncode == 2, proc.stderr
        assert "too short" in one_line_error(proc) and f"at least {MIN_ASSET_PREFIX}" in proc.stderr
    # a prefix that matches nothing is "not found" (exit 1), naming what was asked for
    # (content hashes of the example files: none starts with eight zeros)
    miss = "00000000"
    proc = mmrag("inspect", miss, "--store", str(store))
    assert proc.returncode == 1 and miss in one_line_error(proc)


def test_prefix_rule_function_rejects_short_and_ambiguous_prefixes():
    """The library rule the CLI and the facade share (ambiguity cannot be forged with real hashes)."""
    ids = ["abcdef0123456789abcdef0123456789", "abcdef01ffff0000abcdef0123456789", "12345678aaaabbbbccccddddeeeeffff"]
    assert resolve_asset_id(ids, "12345678") == ids[2]
    assert resolve_asset_id(ids, " ABCDEF0123 ") == ids[0]
    assert resolve_asset_id(ids, ids[1]) == ids[1]
    with pytest.raises(AssetIdError, match="ambiguous.*2 assets"):
        resolve_asset_id(ids, "abcdef01")
    with pytest.raises(AssetIdError, match="too short"):
        resolve_asset_id(ids, "1234567")
    with pytest.raises(AssetNotFoundError):
        resolve_asset_id(ids, "99999999")
    with pytest.raises(AssetNotFoundError):
        resolve_asset_id(ids, "not-an-id")
    assert issubclass(AssetIdError, MMRAGError)


# ---- delete asks first ---------------------------------------------------------------------------
def test_delete_without_yes_refuses_when_stdin_is_not_a_terminal(ingested, store, asset_id):
    target = str(ingested.data / "coffee_cup.jpg")
    proc = mmrag("delete", target, "--store", str(store))  # stdin is /dev/null
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert "--yes" in err and asset_id("coffee_cup.jpg") in err
    proc = mmrag("inspect", target, "--store", str(store), "--json")
    assert proc.returncode == 0  # still there


def _delete_on_a_terminal(args, answer: str):
    """Run ``mmrag delete`` with a pseudo-terminal as stdin and type ``answer``."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "mmrag_li.cli", "delete", *args], stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLI_ENV)
        os.close(slave)
        slave = None
        os.write(master, answer.encode() + b"\n")
        out, err = p.communicate(timeout=300)
        return p.returncode, out, err
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


def test_delete_asks_on_a_terminal(ingested, store, tmp_path, asset_id):
    copy = ingested.copy(tmp_path / "store")
    aid = asset_id("coffee_cup.jpg")
    code, out, err = _delete_on_a_terminal([aid[:12], "--store", str(copy)], "n")
    assert code == 1 and "[y/N]" in err and "coffee_cup.jpg" in err and "not deleted" in err
    assert mmrag("inspect", aid, "--store", str(copy)).returncode == 0
    code, out, err = _delete_on_a_terminal([aid[:12], "--store", str(copy)], "y")
    assert code == 0, err
    assert f"of asset {aid}" in out
    assert mmrag("inspect", aid, "--store", str(copy)).returncode == 1


# ---- errors -----------------------------------------------------------------------------------------
def test_fatal_errors_are_one_line_and_verbose_adds_the_traceback(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval:\n  top_k: [not, a, number]\n")
    proc = mmrag("stats", "--store", str(store), "--config", str(bad), "--json")
    assert proc.returncode in (1, 2) and proc.stdout == ""
    err = one_line_error(proc)
    assert err.startswith("mmrag stats: ") and "top_k" in err
    proc = mmrag("stats", "--store", str(store), "--config", str(bad), "--verbose")
    assert proc.returncode in (1, 2) and "Traceback" in proc.stderr


def test_eval_lives_in_the_cli_not_the_harness():
    """`mmrag eval` glue is CLI-side: importing the harness does not import the CLI."""
    code = "import sys, mmrag_li.evaluation.harness as h; print('mmrag_li.cli' in sys.modules, hasattr(h, 'evaluate'))"
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=CLI_ENV, timeout=300)
    assert out.stdout.split() == ["False", "True"], (out.stdout, out.stderr[-1000:], time.time() - t)
