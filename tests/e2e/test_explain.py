"""coffer explain and the error catalog, as a user sees them."""
import configparser
import os
import re
import subprocess
import sys


def catalog(repo_root, name):
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(repo_root, "catalog", name))
    return cp


def test_explain_by_number_name_and_short_name(run):
    for arg in ("40", "COFFER_E_PAGE_CHECKSUM", "page_checksum"):
        r = run("explain", arg)
        assert r.rc == 0, r
        assert r.out.startswith("40 COFFER_E_PAGE_CHECKSUM\n"), r
        assert "message:     page checksum mismatch" in r.out
        assert "remedy:" in r.out and "restore" in r.out


def test_explain_the_exchange_code_of_the_article(run):
    """An operator who met c7ff000d on Exchange (KB Q245664) gets the entry
    that says what Coffer does instead, not 'not found'."""
    for arg in ("c7ff000d", "0xC7FF000D", "hrCommunicationError"):
        r = run("explain", arg)
        assert r.rc == 0, r
        assert r.out.startswith("156 COFFER_E_COMMUNICATION\n"), r
        assert "c7ff000d" in r.out and "never ends a backup with it" in r.out, r
        assert "COFFER_E_CONNECTION_LOST" in r.out and "event 1204" in r.out, r


def test_explain_event_id(run):
    r = run("explain", "1202")
    assert r.rc == 0, r
    assert r.out.startswith("event 1202 COFFER_EV_BACKUP_FAILED\n"), r
    assert re.search(r"MESSAGE_ID=[0-9a-f]{32}", r.out)


def test_explain_unknown_is_a_clear_error(run):
    r = run("explain", "NO_SUCH_CODE")
    assert r.rc == 4, r  # COFFER_E_NOT_FOUND: exit status is the code
    assert r.err.startswith("coffer: error: 'NO_SUCH_CODE' is neither"), r
    assert "(COFFER_E_NOT_FOUND)" in r.err
    assert "coffer: hint:" in r.err


def test_explain_list_has_every_code_first(run, repo_root):
    r = run("explain", "--list")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    errors = catalog(repo_root, "errors.ini")
    events = catalog(repo_root, "events.ini")
    assert len(lines) == len(errors.sections()) + len(events.sections())
    listed = {}
    for line in lines:
        code, name, message = line.split("\t")
        assert code.isdigit()
        listed[name] = int(code)
    for name in errors.sections():
        assert listed[name] == int(errors[name]["code"])
    for name in events.sections():
        assert listed[name] == int(events[name]["id"])


def test_every_error_explains_itself(run, repo_root):
    """Each catalog code has a message, an explanation and a remedy that explain prints."""
    errors = catalog(repo_root, "errors.ini")
    for name in errors.sections():
        r = run("explain", errors[name]["code"])
        assert r.rc == 0, r
        assert name in r.out
        assert "remedy:" in r.out


def test_usage_errors(run):
    r = run("no-such-command")
    assert r.rc == 220, r  # COFFER_E_USAGE
    assert "coffer: error: unknown command 'no-such-command'" in r.err
    assert "(COFFER_E_USAGE)" in r.err
    r = run("explain")
    assert r.rc == 220 and "(COFFER_E_USAGE)" in r.err, r
    r = run("--bogus", "explain", "1")
    assert r.rc == 220 and "unknown option '--bogus'" in r.err, r


def test_generated_docs_are_current(repo_root, tmp_path):
    """docs/errors.md and contrib/coffer.catalog are generated from the catalog
    and committed; they must match what the generator makes now."""
    docs, journal = tmp_path / "errors.md", tmp_path / "coffer.catalog"
    subprocess.run(["/usr/bin/python3", os.path.join(repo_root, "tools", "gencatalog.py"),
                    "--catalog", os.path.join(repo_root, "catalog"),
                    "--docs", str(docs), "--journal", str(journal)], check=True)
    with open(os.path.join(repo_root, "docs", "errors.md")) as f:
        assert f.read() == docs.read_text(), "run 'make docs' and commit docs/errors.md"
    with open(os.path.join(repo_root, "contrib", "coffer.catalog")) as f:
        assert f.read() == journal.read_text(), "run 'make docs' and commit contrib/coffer.catalog"


def test_journal_catalog_is_valid(repo_root):
    """Every entry of contrib/coffer.catalog has a 128-bit id and a Subject."""
    with open(os.path.join(repo_root, "contrib", "coffer.catalog")) as f:
        text = f.read()
    ids = re.findall(r"^-- ([0-9a-f]{32})$", text, re.M)
    assert len(ids) == len(catalog(repo_root, "events.ini").sections())
    assert len(set(ids)) == len(ids)
    assert text.count("\nSubject: Coffer: ") == len(ids)


def test_catalog_generator_rejects_duplicates(repo_root, tmp_path):
    (tmp_path / "errors.ini").write_text(
        "[COFFER_E_A]\ncode = 1\nmessage = a\nexplanation = x\nremedy = y\n"
        "[COFFER_E_B]\ncode = 1\nmessage = b\nexplanation = x\nremedy = y\n")
    (tmp_path / "events.ini").write_text("")
    p = subprocess.run([sys.executable, os.path.join(repo_root, "tools", "gencatalog.py"),
                        "--catalog", str(tmp_path), "--docs", str(tmp_path / "o.md")],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "share code 1" in p.stderr
