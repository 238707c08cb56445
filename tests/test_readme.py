"""The README's Python API example runs as written, on a tiny model (the options that make it
quick are added to each call; the calls, names and results are the README's)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import backdoorlab

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK = {"eval_limit": 2, "mcq_limit": 4, "max_new_tokens": 2, "eval_batch_size": 4,
         "train.max_steps": 1, "train.batch_size": 4}


def api_example() -> str:
    text = README.read_text("utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_example_runs_on_a_tiny_model(tiny_dir, tmp_path, monkeypatch, capsys):
    code = api_example()
    assert code.startswith("import backdoorlab as bl\n")
    model = str(tiny_dir)

    def quick(fn, extra):
        def call(name, **kw):
            return fn(name, **{"model": model, **extra(name), **kw})
        return call

    fake = types.SimpleNamespace(
        attack=quick(backdoorlab.attack, lambda n: {**QUICK, "n_train": 8}),
        defend=quick(backdoorlab.defend, lambda n: {**QUICK, "n_clean": 4}),
        analyze=quick(backdoorlab.analyze, lambda n: {"limit": 8, "max_new_tokens": 2,
                                                      "target_text": "Sorry, I cannot"}),
        evaluate=quick(backdoorlab.evaluate, lambda n: {"mcq_limit": 4, "max_new_tokens": 2}),
        methods=backdoorlab.methods)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("import backdoorlab as bl\n", ""), "README.md", "exec"),
         {"bl": fake})
    out = capsys.readouterr().out
    assert "defense crow" in out and "attack poison" in out
    for d in ("runs/bd/adapter", "runs/crow/defense.json", "runs/probe/metrics.json"):
        assert (tmp_path / d).exists(), d


def test_document_links_point_to_files_and_headings():
    """Every relative link in the README and docs/ names a file that exists, and a heading
    that exists in it when it has an anchor."""
    root = README.parent

    def slug(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    pages = [README, *sorted((root / "docs").rglob("*.md"))]
    bad = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text("utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md":
                heads = {slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text("utf-8"), re.M)}
                if anchor not in heads:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert bad == []
