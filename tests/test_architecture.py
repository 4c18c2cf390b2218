"""The house (docs/architecture.md): three wings and imports that point one way.

The project's modules and their imports are read from the source (ast, no
import), and the rules of docs/architecture.md are asserted on that graph:
the top level holds what people run and the two contract modules; the library
(vaelib/) never imports a top-level script; the grader takes from the top
level only the reference's contract functions and the data/plotting modules;
no script imports another; no circle.

Run as a script, it draws the picture docs/architecture.md shows:
    python tests/test_architecture.py --png docs/architecture.png
"""
import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {"vae", "data", "plotting", "check", "evaluate", "conditional", "posterior_gap",
             "variants", "classifier", "bench"}
CONTRACT_MODULES = {"data", "plotting"}      # know nothing of the model; import each other only
WINGS = ("vaelib", "grader")
# What a module outside vae.py may take from it (docs/architecture.md): the
# assignment's functions (../shared/ASSIGNMENT.md), its Adam step and
# binarisation, and the assignment's loop, options and figures, which other
# scripts reuse rather than copy (posterior_gap.py and bench.py run vae.py's
# own loop; variants.py draws vae.py's figures; the grader judges the figures
# the assignment asks for).
VAE_CONTRACT = {"sigmoid", "relu", "init_net_params", "neural_net_predict",
                "unpack_gaussian_params", "sample_latent_variables_from_posterior",
                "bernoulli_log_prob", "compute_KL", "vae_lower_bound", "adam_step", "binarize",
                "train", "parse_args", "write_figures", "NUM_PRIOR_SAMPLES",
                "NUM_RECONSTRUCTIONS", "INTERPOLATION_PAIRS", "INTERPOLATION_STEPS",
                "MANIFOLD_SIDE"}


def modules(root=ROOT):
    """{dotted name: path} of the project's modules (tests excluded)."""
    found = {p.stem: p for p in root.glob("*.py")}
    for wing in WINGS:
        found.update({f"{wing}.{p.stem}": p for p in (root / wing).glob("*.py")
                      if p.stem != "__init__"})
    return found


def imports(root=ROOT):
    """{module: {imported project module: names taken from it as module.X}}."""
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        taken, aliases = {}, {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        taken.setdefault(alias.name, set())
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in mods:                       # from vaelib import runs
                        taken.setdefault(full, set())
                        aliases[alias.asname or alias.name] = full
                    elif node.module in mods:              # from data import load_data
                        taken.setdefault(node.module, set()).add(alias.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                taken[aliases[node.value.id]].add(node.attr)
        taken.pop(name, None)
        graph[name] = taken
    return graph


def circles(graph):
    """Lists of modules that import each other round a circle (empty if none)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def wing(name):
    return name.split(".")[0] if "." in name else "top"


def test_the_top_level_holds_what_people_run_and_the_contract_modules():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top <= TOP_LEVEL and len(top) <= 11, sorted(top - TOP_LEVEL)


def test_the_library_never_imports_a_top_level_script():
    graph = imports()
    wrong = {(a, b) for a, targets in graph.items() for b in targets
             if wing(a) == "vaelib" and wing(b) == "top" and b not in CONTRACT_MODULES}
    assert not wrong, sorted(wrong)


def test_the_contract_modules_import_nothing_of_the_project_but_each_other():
    graph = imports()
    wrong = {(a, b) for a in CONTRACT_MODULES for b in graph[a] if b not in CONTRACT_MODULES}
    assert not wrong, sorted(wrong)


def test_no_script_imports_another_except_vae_s_contract_functions():
    graph = imports()
    wrong = {(a, b) for a, targets in graph.items() for b in targets
             if wing(a) != "vaelib" and wing(b) == "top"
             and b not in CONTRACT_MODULES | {"vae"}}
    assert not wrong, sorted(wrong)
    beyond = {(a, name) for a, targets in graph.items() if "vae" in targets
              for name in targets["vae"] - VAE_CONTRACT}
    assert not beyond, sorted(beyond)


def test_what_the_grader_stages_in_its_sandbox_needs_nothing_else():
    """The worker's modules run in the sandbox beside a student's file, where
    only they, data.py and plotting.py are: they import nothing else of ours
    (the grading process itself may use the library)."""
    from grader.isolation import STAGED
    staged = {Path(name).with_suffix("").as_posix().replace("/", ".") for name in STAGED}
    graph = imports()
    wrong = {(a, b) for a in staged & set(graph) for b in graph[a]
             if b not in staged and b not in CONTRACT_MODULES}
    assert not wrong, sorted(wrong)


def test_no_circles():
    graph = {a: set(targets) for a, targets in imports().items()}
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


# ---- The picture of docs/architecture.md -------------------------------------------

def draw(path):
    """The modules as boxes in three columns (top level, vaelib/, grader/ as
    one box), rows by layer (a module sits above everything it imports), and
    the imports as arrows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = imports()
    node = {name: ("grader/" if wing(name) == "grader" else name) for name in graph}
    edges = {(node[a], node[b]) for a, targets in graph.items() for b in targets
             if node[a] != node[b]}
    names = sorted(set(node.values()))
    layer = {}

    def depth(n):
        if n not in layer:
            layer[n] = 0
            layer[n] = 1 + max((depth(b) for a, b in edges if a == n), default=-1)
        return layer[n]
    for n in names:
        depth(n)
    column = {n: 0 if "/" not in n and "." not in n and n not in CONTRACT_MODULES
              else 1 if n in CONTRACT_MODULES or n == "grader/" else 2 for n in names}
    column.update({n: 2 for n in names if n.startswith("vaelib.")})
    slots, where = {}, {}
    for n in sorted(names, key=lambda n: (-layer[n], column[n], n)):
        key = (layer[n], column[n])
        slots[n], slots[key] = slots.get(key, 0), slots.get(key, 0) + 1
    width = {c: max([slots[k] for k in slots if isinstance(k, tuple) and k[1] == c] or [1])
             for c in range(3)}
    start = {0: 0.0, 1: 2.6 * width[0] + 1.0}
    start[2] = start[1] + 2.6 * width[1] + 1.0
    for n in names:
        where[n] = (start[column[n]] + 2.6 * slots[n], layer[n] * 1.0)
    right = start[2] + 2.6 * width[2]
    fig, ax = plt.subplots(figsize=(right * 0.62 + 1, 0.75 * (max(layer.values()) + 2)))
    for a, b in sorted(edges):
        (x0, y0), (x1, y1) = where[a], where[b]
        ax.annotate("", (x1, y1 + 0.18), (x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "->", "color": "0.55", "lw": 0.6, "alpha": 0.6})
    colours = {0: "#dbe9f6", 1: "#f6e7d8", 2: "#e3f1dc"}
    for n, (x, y) in where.items():
        ax.text(x, y, n.replace("vaelib.", "vaelib/") + ("" if n.endswith("/") else ".py"),
                ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": colours[column[n]], "ec": "0.4"})
    for c, title in enumerate(("scripts (top level)", "contract modules, grader/",
                               "library: vaelib/")):
        ax.text(start[c] + 1.3 * (width[c] - 1), max(layer.values()) + 1, title,
                ha="center", fontsize=10, weight="bold")
    ax.set_xlim(-1.5, right)
    ax.set_ylim(-0.7, max(layer.values()) + 1.5)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Draw the project's import graph.")
    parser.add_argument("--png", type=Path, required=True, help="where the picture goes")
    draw(parser.parse_args().png)
    sys.exit(0)
