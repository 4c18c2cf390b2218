"""check.py --html: the class report and the student's feedback page
(grader/pages.py), with the figures each figure check judged beside the
reference's (grader/thumbnails.py).

A class of five synthetic students (tests/student_vae.py with a different
mistake each, hostile names among them) is graded end to end by check.main
with --jobs 2, once for the module; the page's structure is read with
html.parser, its images decoded, and the page rendered in headless Chromium
(Debian's chromium package; the Chromium tests are skipped where it is not
installed): the page's own script writes into <html> how many images loaded
and their natural widths, which --dump-dom shows."""
import base64
import csv
import html
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import check
from grader import pages, report as report_module, rubric
from grader.outputs import Graded
from grader.rubric import Record

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
HOSTILE_FOLDER = 'bob <b>"x"</b> & \'y\''
HOSTILE_FIGURE = "<img src=x onerror=alert(1)>.png"
PRIOR_CALL = "samples = sigmoid(neural_net_predict(gen_params, npr.randn(25, 50)))"
RECONSTRUCTIONS_CALL = "np.concatenate([test_images[:10], reconstructions])"
PAIRS_LOOP = "for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:"
KL = "np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std"
STUDENTS = {   # folder: its vae.py
    "ada": STUDENT,
    HOSTILE_FOLDER: STUDENT.replace(PRIOR_CALL, PRIOR_CALL.replace("sigmoid(", "("))
                           .replace('"samples.png"', repr(HOSTILE_FIGURE)),
    "cy": STUDENT.replace(RECONSTRUCTIONS_CALL, "np.concatenate([test_images[:10]] * 2)"),
    "dee": STUDENT.replace(KL, "np.exp(log_std) + mean ** 2 - 1 - log_std")
                  .replace(PAIRS_LOOP, "for a, b in [(0, 1), (2, 3)]:"),
    "eve": "import numpy\n\ndef f(:\n    pass\n",
}
# PNG sizes: one pixel per image pixel and a 1-pixel gap (grader/thumbnails.py)
PRIOR_SIZE, RECONSTRUCTIONS_SIZE = (146, 146), (291, 59)


def interpolation_size(rows):
    return 726, rows * 29 + 1


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")


class Page(HTMLParser):
    """The tags of a page: rows of the class table (data-total rows) with their
    text and images, every <img> and <script>."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.images, self.scripts, self.tags, self.cell = [], [], 0, [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-total" in attrs:
            self.rows.append({"attrs": attrs, "cells": [], "images": []})
        elif tag == "td" and self.rows:
            self.rows[-1]["cells"].append("")
        elif tag == "img":
            self.images.append(attrs)
            if self.rows:
                self.rows[-1]["images"].append(attrs)
        self.scripts += tag == "script"

    def handle_data(self, data):
        if self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1] += data


def png_of(attrs):
    prefix = "data:image/png;base64,"
    assert attrs["src"].startswith(prefix), attrs["src"][:40]
    return base64.b64decode(attrs["src"][len(prefix):], validate=True)


def decoded(data):
    """The PNG's pixels (height, width, channels), decoded in full."""
    import matplotlib.image
    return matplotlib.image.imread(io.BytesIO(data), format="png")


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """check.main on the class with --jobs 2: (exit code, page text, csv rows,
    json folder, the Graded list and isolation pages.render was given)."""
    top = tmp_path_factory.mktemp("class")
    folder = top / "class"
    for name, source in STUDENTS.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "vae.py").write_text(source)
    page, table, jsons = top / "class.html", top / "class.csv", top / "json"
    seen = {}
    real = pages.render

    def spy(graded, isolation):
        seen.update(graded=graded, isolation=isolation)
        return real(graded, isolation)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pages, "render", spy)
        code = check.main([str(folder), "--jobs", "2", "--html", str(page), "--csv", str(table),
                           "--json-dir", str(jsons)])
    rows = list(csv.DictReader(table.open()))
    return {"code": code, "page": page.read_text(), "path": page, "csv": rows, "json": jsons,
            "graded": seen["graded"], "isolation": seen["isolation"], "top": top}


def row_of(parsed, name):
    return next(r for r in parsed.rows if r["attrs"]["data-file"].endswith(f"/{name}/vae.py"))


# ---- The class page ------------------------------------------------------------------

def test_one_row_per_student_with_its_points_sorted_by_total(graded_class):
    assert graded_class["code"] == 2        # eve's file cannot be loaded
    parsed = Page(graded_class["page"])
    assert len(parsed.rows) == len(STUDENTS) == len(graded_class["csv"])
    totals = [float(r["attrs"]["data-total"]) for r in parsed.rows]
    assert totals == sorted(totals)         # lowest first, as the page says
    assert "sorted by total points, lowest first" in graded_class["page"]
    assert any(attrs.get("data-key") == "total" for tag, attrs in parsed.tags if tag == "th")
    by_file = {r["file"]: r for r in graded_class["csv"]}
    for row in parsed.rows:
        line = by_file[row["attrs"]["data-file"]]
        assert float(row["attrs"]["data-total"]) == pytest.approx(float(line["total"]))
        assert f"{float(line['total']):.4g} / {float(line['max']):.4g}" in row["cells"][2]
        assert f"{float(line['percent']):.1f}%" in row["cells"][2]
    ada, eve = row_of(parsed, "ada"), row_of(parsed, "eve")
    assert ada["cells"][1] == "pass"     # the one check that lost points: a warning's half
    assert ada["cells"][3].startswith("bernoulli_log_prob: exact at logits +-1000 (1/2): ")
    assert ada["cells"][3].count("(1/2)") == 1 and "(0/" not in ada["cells"][3]
    assert eve["cells"][1] == "error" and "line 3" in eve["cells"][3]
    assert totals[0] == float(eve["attrs"]["data-total"]) == 0
    assert float(ada["attrs"]["data-total"]) == totals[-1]


def test_failing_checks_name_each_mistake(graded_class):
    parsed = Page(graded_class["page"])
    bob = next(r for r in parsed.rows if "bob" in r["attrs"]["data-file"])
    assert "25 prior samples" in bob["cells"][3] and "logits" in bob["cells"][3]
    cy = row_of(parsed, "cy")
    assert "the reconstructions are the originals shown again" in cy["cells"][3]
    dee = row_of(parsed, "dee")
    assert "compute_KL" in dee["cells"][3]


def test_hostile_names_and_messages_are_escaped(graded_class):
    text = graded_class["page"]
    assert HOSTILE_FIGURE not in text and "<b>" not in text
    assert html.escape(HOSTILE_FOLDER) in text
    parsed = Page(text)
    assert parsed.scripts == 2              # the page's own two: sorting, images loaded
    assert all(set(attrs) <= {"src", "width", "height", "alt"} for attrs in parsed.images)
    assert not [tag for tag, _ in parsed.tags if tag in ("iframe", "object", "embed", "link")]
    bob = next(r for r in parsed.rows if "bob" in r["attrs"]["data-file"])
    assert HOSTILE_FOLDER in bob["cells"][0]          # shown as text, as it is
    assert HOSTILE_FIGURE in bob["cells"][3]          # its message quotes the file name


def test_figures_are_png_data_urls_of_the_right_size_beside_the_reference(graded_class):
    parsed = Page(graded_class["page"])
    references = set()
    for name in ("ada", "cy", "dee"):
        images = row_of(parsed, name)["images"]
        labels = [attrs["alt"] for attrs in images]
        assert labels[-1] == "reference interpolations" and "reference prior samples" in labels
        for attrs in images:
            data = png_of(attrs)
            width, height = pages.png_size(data)
            assert decoded(data).shape[:2] == (height, width)
            scale = 0.4 if "interpolations" in attrs["alt"] else 0.5
            assert (int(attrs["width"]), int(attrs["height"])) == (round(width * scale),
                                                                   round(height * scale))
            if "prior" in attrs["alt"]:
                assert (width, height) == PRIOR_SIZE
            elif "reconstructions" in attrs["alt"]:
                assert (width, height) == RECONSTRUCTIONS_SIZE
            if attrs["alt"].startswith("reference"):
                references.add(data)
    assert len(references) == 3             # the same three reference figures in every row
    ada = {attrs["alt"]: pages.png_size(png_of(attrs)) for attrs in row_of(parsed, "ada")["images"]}
    dee = {attrs["alt"]: pages.png_size(png_of(attrs)) for attrs in row_of(parsed, "dee")["images"]}
    assert ada["submitted interpolations"] == ada["reference interpolations"] == \
        interpolation_size(5)
    assert dee["submitted interpolations"] == interpolation_size(2)   # two pairs saved
    assert row_of(parsed, "eve")["images"] == []      # not loaded: nothing to show
    assert "no prior samples: error" in row_of(parsed, "eve")["cells"][4]
    assert "and 29 more checks (0/100): syntax error at line 3" in row_of(parsed, "eve")["cells"][3]
    assert row_of(parsed, "ada")["cells"][0] == "ada/vae.py"     # below the class's folder


def test_the_submitted_figures_are_the_students(graded_class):
    """cy shows its originals twice; ada its reconstructions below them."""
    parsed = Page(graded_class["page"])

    def halves(name):
        attrs = next(a for a in row_of(parsed, name)["images"]
                     if a["alt"] == "submitted reconstructions")
        pixels = decoded(png_of(attrs))[..., 0]
        return pixels[1:29], pixels[30:58]
    top, bottom = halves("cy")
    assert np.array_equal(top, bottom)
    top, bottom = halves("ada")
    assert not np.array_equal(top, bottom)


def test_no_arrays_in_the_json_outputs(graded_class):
    files = sorted(graded_class["json"].glob("*.json"))
    assert len(files) == len(STUDENTS)
    for path in files:
        body = json.loads(path.read_text())
        assert "figures" not in body
    ada = next(g for g in graded_class["graded"] if g.report["file"].endswith("/ada/vae.py"))
    assert set(ada.report["figures"]) == {"25 prior samples", "five interpolations",
                                          "10 test images and their reconstructions"}
    text = report_module.as_json([ada.report], graded_class["isolation"], True)
    assert "figures\":" not in text.replace('"figures": "pass"', "")
    assert json.loads(text)["verdict"] == "pass"


# ---- Chromium ------------------------------------------------------------------------

def chromium(page, *options):
    home = page.parent / "chromium-profile"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={home}", *options,
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def loaded(dom):
    """(images loaded, images, natural widths) the page's script wrote into <html>."""
    parsed = Page(dom)
    root = next(attrs for tag, attrs in parsed.tags if tag == "html")
    assert "data-images-loaded" in root, "the page's script did not run"
    count, _, of = root["data-images-loaded"].partition(" of ")
    return int(count), int(of), [int(w) for w in root["data-image-widths"].split()]


@needs_chromium
def test_chromium_loads_every_image_of_the_class_page(graded_class):
    images = Page(graded_class["page"]).images
    count, of, widths = loaded(chromium(graded_class["path"], "--dump-dom"))
    assert count == of == len(images) == 3 * 6 + 6     # ada, bob, cy, dee: 6; eve none
    assert widths == [pages.png_size(png_of(attrs))[0] for attrs in images]
    shot = graded_class["top"] / "class.png"
    chromium(graded_class["path"], f"--screenshot={shot}", "--window-size=1500,1100")
    pixels = decoded(shot.read_bytes())
    assert pixels.shape[:2] == (1100, 1500)
    assert pixels[..., :3].min() < 0.2 < 0.9 < pixels[..., :3].max()   # text and figures drawn


# ---- One student's page --------------------------------------------------------------

def test_one_file_gives_the_feedback_page(tmp_path):
    student = tmp_path / "vae.py"
    student.write_text(STUDENT.replace(KL, "np.exp(log_std) + mean ** 2 - 1 - log_std"))
    page = tmp_path / "feedback.html"
    assert check.main([str(student), "--functions-only", "--html", str(page)]) == 1
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<h1>Feedback:" in text
    parsed = Page(text)
    checks = [tag for tag, _ in parsed.tags if tag == "tr"]
    assert len(checks) == 1 + len(rubric.load())        # the header and every check
    assert "compute_KL: values" in text and "log_std was used as log-variance" in text


def test_the_feedback_page_shows_figures_and_hides_hidden_checks(graded_class, tmp_path):
    ada = next(g for g in graded_class["graded"] if g.report["file"].endswith("/ada/vae.py"))
    override = tmp_path / "hidden.toml"
    override.write_text('[checks."kl.values"]\nvisibility = "hidden"\n')
    records = rubric.records(ada.report, rubric.load(override))
    text = pages.render([Graded(ada.report, records)], graded_class["isolation"])
    assert "compute_KL: values" not in text and "1 hidden check (worth" in text
    assert "99 / 100" in text or "100 / 100" in text
    page = tmp_path / "ada.html"
    page.write_text(text)
    images = Page(text).images
    assert [attrs["alt"] for attrs in images] == [
        f"{who} {what}" for what in ("prior samples", "reconstructions", "interpolations")
        for who in ("submitted", "reference")]
    assert int(images[0]["width"]) == 2 * PRIOR_SIZE[0]
    if CHROMIUM is not None:
        count, of, widths = loaded(chromium(page, "--dump-dom"))
        assert count == of == 6 and widths == [pages.png_size(png_of(a))[0] for a in images]


# ---- Escaping and bounds, without grading ---------------------------------------------

def fake(file, message, status="fail", images=()):
    record = Record(id="kl.values", name="compute_KL: values", task="1.3",
                    points=0.0 if status == "fail" else 3.0, max_points=3.0, status=status,
                    message=message, visibility="visible", images=list(images))
    return Graded({"file": file, "verdict": "fail" if status == "fail" else "pass",
                   "loaded": "full", "results": [], "notes": []}, [record])


@pytest.mark.parametrize("one_file", [True, False])
def test_text_is_escaped_and_bounded(one_file):
    hostile = "</td></tr></table><script>alert(1)</script>\"'&"
    graded = [fake(hostile + "x" * 5000, hostile + "y" * 100_000)]
    if not one_file:
        graded.append(fake("b.py", "fine", "pass"))
    text = pages.render(graded, None)
    assert "<script>alert" not in text and html.escape(hostile) in text
    assert len(text) < 30_000                       # 105,000 characters cut
    assert "more characters)" in text
    assert Page(text).scripts == (1 if one_file else 2)
    assert "the sandbox could not be set up" in text


def test_an_image_that_is_not_a_png_is_not_embedded():
    graded = [fake("a.py", "m", images=[{"label": "yours", "png": b"<svg onload=alert(1)>"}])]
    graded[0].records[0].name = "25 prior samples"
    graded[0].records[0].id = "figures.prior"
    text = pages.render(graded * 2, None)
    assert "not an image" in text and "<svg" not in text and "data:image" not in text
