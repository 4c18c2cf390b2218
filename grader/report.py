"""What check.py prints: a table per file, a row per file of a class, the
isolation footer, and JSON.

Every string that came from a submission (messages, names, source lines,
output, file names) is shown with control characters escaped, so that no
submission can move the cursor, clear a line or recolour the screen and
make a failing row look like a pass. JSON stays exact: json.dumps escapes
control characters and non-ASCII itself.
"""
import json
import re
import unicodedata

from grader.grading import counts, part_of

# C0 and C1 controls, DEL, and the format characters that reorder or hide text.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                    "\ufeff\ufff9-\ufffb\ud800-\udfff]")


def escape(match):
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:            # a byte of a file name that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text):
    """text with every control and invisible format character escaped."""
    text = UNSAFE.sub(escape, str(text))
    if any(unicodedata.category(c) == "Cf" for c in text):   # other format characters
        text = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c
                       for c in text)
    return text


def print_table(report):
    print(f"{shown(report['file'])} (loaded: {report['loaded'] or 'no'})")
    width = max(len(shown(r["function"])) for r in report["results"])
    part = None
    for r in report["results"]:
        if part_of(r) != part:
            part = part_of(r)
            print(f"  {part}: {report['parts'].get(part, '').upper()}")
        print(f"  {shown(r['function']):<{width}}  {shown(r['check']):<44} "
              f"{r['status'].upper():<7} {shown(r['message'])}")
    for note in report.get("notes", []):
        print(f"  note: {shown(note)}")
    c = counts(report)
    print(f"summary: {c['pass']} passed, {c['fail']} failed, {c['warning']} warnings, "
          f"{c['error']} errors, {c['skipped']} skipped", flush=True)


def print_row(report):
    c = counts(report)
    print(f"{shown(report['file']):<50} {report['verdict'].upper():<6} "
          f"{'loaded' if report['loaded'] else 'NOT LOADED':<10} {c['pass']:3d} passed "
          f"{c['fail']:3d} failed {c['warning']:3d} warnings {c['error']:3d} errors", flush=True)
    if report["verdict"] == "error":
        causes = [r["message"] for r in report["results"] if r["status"] == "error"]
        if causes:
            print(f"    {shown(causes[0])[:300]}", flush=True)


def without_figures(report):
    """report without its figures' arrays (grader/thumbnails.py: the pages' images)."""
    return {key: value for key, value in report.items() if key != "figures"}


def print_footer(isolation):
    """Which level graded, and which limits held."""
    held = isolation.describe()
    print(f"sandbox: {held['level']}; " + "; ".join(
        f"{key}: {value}" for key, value in held.items() if key != "level"), flush=True)


def as_json(reports, isolation, one_file):
    reports = [without_figures(r) for r in reports]
    body = reports[0] if one_file else {"files": reports, "summary": {
        "files": len(reports),
        **{v: [r["verdict"] for r in reports].count(v) for v in ("pass", "fail", "error")}}}
    return json.dumps({**body, "isolation": isolation.describe()}, indent=2)
