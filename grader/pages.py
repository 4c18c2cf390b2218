"""check.py --html FILE: a page to look at, self-contained (CSS inline,
images as data: URLs, no external resource, nothing fetched).

    render(graded, isolation) -> str
        one file:  the student's feedback page: every check with its points and
                   message, the three figures beside the reference's;
        a class:   one row per file: verdict, points (total / max, percent), the
                   failing checks' messages, the three figures as thumbnails
                   beside the reference's; rows sorted by total, lowest first
                   (the students to look at first), and sortable by clicking a
                   column's header (a small inline script; without it the
                   order stays the server's).

Everything that came from a submission (its file name, messages that quote
its files and values, its figures) is hostile: text is escaped with
html.escape and cut to a bounded length, images are PNGs the grader encoded
itself (grader/thumbnails.py). A Content-Security-Policy allows only the
page's own style, its two scripts (by hash) and data: images, so even a
mistake in escaping could not load or run anything else.

The scripts: one sorts the table; one, on load, writes how many images
loaded and their widths into <html data-images-loaded data-image-widths>
(tests/grading/test_pages.py renders the page in headless Chromium and reads
them; a reader sees the count in the footer).
"""
import base64
import hashlib
import html
import os
import struct
from pathlib import Path

from grader.rubric import total

MAX_NAME = 200              # characters of a file name shown
MAX_MESSAGE = 1500          # characters of a message on the feedback page
MAX_ROW_MESSAGE = 400       # ... and in a row of the class page
MAX_ROW_FAILURES = 6        # failing checks listed in a row
# (check, what it shows, scale on the class page, scale on the feedback page)
FIGURES = (("25 prior samples", "prior samples", 0.5, 2),
           ("10 test images and their reconstructions", "reconstructions", 0.5, 2),
           ("five interpolations", "interpolations", 0.4, 1))
LOST = ("fail", "error")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 4px 6px;
  vertical-align: top; text-align: left; }
th { background: #f3f3f3; } th[data-key] { cursor: pointer; }
th[data-key]:hover { background: #e4e4e4; }
.pass { color: #17692a; } .warning { color: #8a5a00; } .fail, .error { color: #b01c1c; }
.skipped { color: #777; } .status { font-weight: 600; text-transform: uppercase; }
.file { max-width: 16em; word-break: break-all; font-family: monospace; }
.points { white-space: nowrap; } .msg { max-width: 44em; word-break: break-word; }
ul.failures { margin: 0; padding-left: 1.1em; max-width: 28em; word-break: break-word; }
figure { display: inline-block; margin: 0 6px 4px 0; vertical-align: top; }
#class figure { display: block; } figcaption { font-size: 11px; color: #555; }
img { background: #fff; border: 1px solid #bbb; }
.none { display: inline-block; color: #777; font-size: 12px; padding: 4px; }
.note { color: #555; max-width: 60em; }
"""

SORT_SCRIPT = """
document.querySelectorAll("th[data-key]").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = document.querySelector("#class tbody"), key = th.dataset.key;
    var up = th.dataset.dir !== "up";
    th.dataset.dir = up ? "up" : "down";
    Array.from(body.rows).sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      var c = key === "file" ? x.localeCompare(y) : Number(x) - Number(y);
      return up ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""

LOADED_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var root = document.documentElement;
  root.dataset.imagesLoaded = loaded.length + " of " + images.length;
  root.dataset.imageWidths = images.map(function (i) { return i.naturalWidth; }).join(" ");
  var note = document.getElementById("loaded");
  if (note) { note.textContent = loaded.length + " of " + images.length + " images loaded"; }
});
"""


def esc(text, limit=None):
    """text escaped for HTML (text and attribute values), cut to limit characters."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}\u2026 ({len(text) - limit:,} more characters)"
    return html.escape(text, quote=True)


def points(value):
    return f"{value:.4g}"


def script_hash(script):
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def page(title, body, scripts):
    policy = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src "
              + " ".join(script_hash(s) for s in scripts))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(policy)}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            + "".join(f"<script>{s}</script>\n" for s in scripts) + "</body>\n</html>\n")


# ---- Images --------------------------------------------------------------------------

def png_size(data):
    """(width, height) of PNG bytes, from the IHDR chunk; None if not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def img(data, alt, scale):
    """An <img> of PNG bytes as a data: URL, shown at scale times its size."""
    size = png_size(data)
    if size is None:
        return f"<span class=\"none\">{esc(alt)}: not an image</span>"
    width, height = (max(1, round(v * scale)) for v in size)
    url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f"<img src=\"{url}\" width=\"{width}\" height=\"{height}\" alt=\"{esc(alt)}\">"


def figure_cell(record, what, scale):
    """The student's figure beside the reference's, each captioned."""
    if record is None or not record.images:
        why = record.status if record is not None else "not graded"
        return f"<span class=\"none\">no {esc(what)}: {esc(why)}</span>"
    images = {image["label"]: image["png"] for image in record.images}
    out = []
    for label, caption in (("yours", "submitted"), ("reference", "reference")):
        if label in images:
            out.append(f"<figure>{img(images[label], f'{caption} {what}', scale)}"
                       f"<figcaption>{caption}</figcaption></figure>")
        else:
            out.append(f"<figure><span class=\"none\">no {esc(what)} found</span>"
                       f"<figcaption>{caption}</figcaption></figure>")
    return "".join(out)


# ---- Common pieces -------------------------------------------------------------------

def verdict_of(report):
    return "grader error" if report.get("grader_problem") else report["verdict"]


def verdict_class(report):
    return "error" if report.get("grader_problem") else report["verdict"]


def score(records):
    got, most = total(records)
    percent = 100 * got / most if most else 0.0
    return got, most, percent


def sandbox_line(isolation):
    if isolation is None:
        return "the sandbox could not be set up"
    held = isolation.describe()
    return f"sandbox: {held.get('level', '?')}"


def by_check(records):
    return {r.name: r for r in records}


# ---- A class -------------------------------------------------------------------------

def failures(records):
    """The checks that lost points, those with the same message as one item
    (a file that does not load fails every check with one message)."""
    lost = [r for r in records if r.status in LOST
            or (r.status == "warning" and r.points < r.max_points - 1e-9)]
    if not lost:
        return "<span class=\"pass\">none</span>"
    groups = {}
    for r in lost:
        groups.setdefault((r.message, r.status), []).append(r)
    items = []
    for (message, status), group in list(groups.items())[:MAX_ROW_FAILURES]:
        names = ", ".join(r.name for r in group[:3]) + (
            f" and {len(group) - 3} more checks" if len(group) > 3 else "")
        got, most = sum(r.points for r in group), sum(r.max_points for r in group)
        items.append(f"<li><span class=\"{esc(status)}\">{esc(names)}</span> "
                     f"({points(got)}/{points(most)}): {esc(message, MAX_ROW_MESSAGE)}</li>")
    if len(groups) > MAX_ROW_FAILURES:
        items.append(f"<li>and {len(groups) - MAX_ROW_FAILURES} more</li>")
    return "<ul class=\"failures\">" + "".join(items) + "</ul>"


def shown_name(file, folder):
    """A file's path below the class's folder, else as it is."""
    try:
        return str(Path(file).relative_to(folder)) if folder else str(file)
    except ValueError:
        return str(file)


def class_folder(graded):
    """The folder every file of the class is in (shown once above the table), or None."""
    parents = [str(Path(g.report["file"]).parent) for g in graded]
    try:
        folder = os.path.commonpath(parents) if parents else ""
    except ValueError:      # relative and absolute paths mixed
        return None
    return folder if folder not in ("", ".", "/") else None


def class_row(g, folder):
    got, most, percent = score(g.records)
    checks = by_check(g.records)
    name = esc(shown_name(g.report["file"], folder), MAX_NAME)
    cells = [f"<td class=\"file\" title=\"{esc(g.report['file'], MAX_NAME)}\">{name}</td>",
             f"<td class=\"status {esc(verdict_class(g.report))}\">"
             f"{esc(verdict_of(g.report))}</td>",
             f"<td class=\"points\">{points(got)} / {points(most)}<br>{percent:.1f}%</td>",
             f"<td>{failures(g.records)}</td>"]
    cells += [f"<td>{figure_cell(checks.get(check), what, scale)}</td>"
              for check, what, scale, _ in FIGURES]
    return (f"<tr data-total=\"{got:.6g}\" data-file=\"{esc(g.report['file'], MAX_NAME)}\" "
            f"data-percent=\"{percent:.6g}\">" + "".join(cells) + "</tr>")


def class_page(graded, isolation):
    rows = sorted(graded, key=lambda g: (total(g.records)[0], str(g.report["file"])))
    folder = class_folder(graded)
    verdicts = [verdict_of(g.report) for g in graded]
    percents = [score(g.records)[2] for g in graded]
    counted = ", ".join(f"{verdicts.count(v)} {v}" for v in ("pass", "fail", "error",
                                                             "grader error") if verdicts.count(v))
    where = f" in <span class=\"file\">{esc(folder, MAX_NAME)}</span>" if folder else ""
    summary = f"{len(graded)} files{where}" + (
        f": {esc(counted)}; mean {sum(percents) / len(percents):.1f}%" if graded else "")
    head = ("<tr><th data-key=\"file\" title=\"sort by file name\">File</th><th>Verdict</th>"
            "<th data-key=\"total\" title=\"sort by total\">Points &#x2195;</th>"
            "<th>Checks that lost points</th>"
            + "".join(f"<th>{esc(what.capitalize())}</th>" for _, what, _, _ in FIGURES)
            + "</tr>")
    body = (f"<h1>Class report</h1>\n<p>{summary}. {esc(sandbox_line(isolation))}.</p>\n"
            "<p class=\"note\">Rows are sorted by total points, lowest first, so the files "
            "to look at come first; click <strong>Points</strong> or <strong>File</strong> to "
            "sort again. Each figure shows the images the grader judged above the "
            "reference's (the skeleton's run on the grader's 300 images).</p>\n"
            f"<table id=\"class\"><thead>{head}</thead>\n<tbody>\n"
            + "\n".join(class_row(g, folder) for g in rows)
            + "\n</tbody></table>\n<p class=\"note\" id=\"loaded\"></p>")
    return page("Class report", body, [SORT_SCRIPT, LOADED_SCRIPT])


# ---- One student ---------------------------------------------------------------------

def check_row(r):
    return (f"<tr><td>{esc(r.task)}</td><td>{esc(r.name)}</td>"
            f"<td class=\"status {esc(r.status)}\">{esc(r.status)}</td>"
            f"<td class=\"points\">{points(r.points)} / {points(r.max_points)}</td>"
            f"<td class=\"msg\">{esc(r.message, MAX_MESSAGE)}</td></tr>")


def student_page(g, isolation):
    report = g.report
    shown = [r for r in g.records if r.visibility != "hidden"]
    hidden = [r for r in g.records if r.visibility == "hidden"]
    got, most, percent = score(g.records)
    checks = by_check(g.records)
    figures = "".join(
        f"<h3>{esc(what.capitalize())}: <span class=\"status {esc(checks[check].status)}\">"
        f"{esc(checks[check].status)}</span></h3>\n<p class=\"msg\">"
        f"{esc(checks[check].message, MAX_MESSAGE)}</p>\n"
        f"{figure_cell(checks[check], what, scale)}\n"
        for check, what, _, scale in FIGURES
        if check in checks and checks[check].visibility != "hidden")
    notes = "".join(f"<li>{esc(note, MAX_MESSAGE)}</li>" for note in report.get("notes", [])[:20])
    body = (f"<h1>Feedback: <span class=\"file\">{esc(report['file'], MAX_NAME)}</span></h1>\n"
            f"<p><span class=\"status {esc(verdict_class(report))}\">"
            f"{esc(verdict_of(report))}</span>: <b>{points(got)} / {points(most)}</b> points "
            f"({percent:.1f}%).</p>\n"
            + (f"<p class=\"note\">{len(hidden)} hidden check{'s' * (len(hidden) != 1)} "
               f"(worth {points(sum(r.max_points for r in hidden))} points) "
               "count in the total but are not listed.</p>\n" if hidden else "")
            + "<h2>Checks</h2>\n<table><thead><tr><th>Task</th><th>Check</th><th>Status</th>"
            "<th>Points</th><th>Message</th></tr></thead>\n<tbody>\n"
            + "\n".join(check_row(r) for r in shown) + "\n</tbody></table>\n"
            + (f"<h2>Notes</h2>\n<ul>{notes}</ul>\n" if notes else "")
            + (f"<h2>Figures</h2>\n<p class=\"note\">The images the grader judged (submitted, "
               f"left) beside the reference's (the skeleton's run on the grader's 300 images, "
               f"right).</p>\n{figures}" if figures else "")
            + f"<p class=\"note\">{esc(sandbox_line(isolation))}. "
            "<span id=\"loaded\"></span></p>")
    return page(f"Feedback: {report['file']}"[:MAX_NAME], body, [LOADED_SCRIPT])


def render(graded, isolation):
    """The --html page: a student's feedback page for one file, else the class's."""
    graded = list(graded)
    if len(graded) == 1:
        return student_page(graded[0], isolation)
    return class_page(graded, isolation)
