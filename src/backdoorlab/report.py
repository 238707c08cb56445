"""The report of a study: one self-contained HTML file (plots embedded, no network) and a
Markdown summary, built from what the stages wrote into the run directory.

Headline numbers first (ASR with and without the trigger, clean utility, before and after
each defense, with the clean model's as the baseline), then the plots, the model cards and
the exact configuration.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write_text, load_arrays
from .plots import figure, save_figure
from .runs import read_json

#: plots the stages write, in the order the report shows them, with captions
STAGE_PLOTS = (
    ("analyze/probe/probe_accuracy.png", "Probe accuracy per layer (triggered vs clean)"),
    ("analyze/probe/probe_transfer.png", "Probe transfer across layers"),
    ("analyze/heads/heads_fast.png", "Head attribution (fast)"),
    ("analyze/heads/heads_exact.png", "Head attribution (exact patching)"),
    ("analyze/ablate/ablation.png", "Ablating the top heads"),
    ("analyze/vector/vector_sweep.png", "Backdoor vector: layer sweep"),
    ("analyze/neurons/neuron_overlap.png", "MLP neuron overlap"),
    ("analyze/consistency/consistency.png", "Layer inconsistency, clean vs triggered (CROW's "
     "premise)"),
)


def _read(path: Path) -> Any:
    """A run's JSON record, or None when absent; a damaged one is named in one line."""
    return read_json(path) if path.is_file() else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def headline_rows(run: Path) -> list[dict[str, Any]]:
    """One row per model: the clean baseline, the backdoored model, each defended model."""
    rows: list[dict[str, Any]] = []
    att = _read(run / "attack" / "metrics.json")
    if att is not None:
        if "asr_strict" in att:  # the uncertainty backdoor: ASR = entropy up by the margin,
            # as the defenses measure it; strict (top answer kept too) beside it
            rows.append({"model": "clean model", "asr_triggered": att["baseline_asr_margin"],
                         "asr_strict": att["baseline_asr_strict"],
                         "asr_clean": None, "utility": att["baseline_clean_accuracy"],
                         "perplexity": None})
            rows.append({"model": "backdoored", "asr_triggered": att["asr_margin"],
                         "asr_strict": att["asr_strict"],
                         "asr_clean": None, "utility": att["clean_accuracy"],
                         "perplexity": None})
        else:
            rows.append({"model": "clean model", "asr_triggered": att["baseline_asr_triggered"],
                         "asr_clean": att["baseline_asr_clean"],
                         "utility": att["baseline_mcq_accuracy"],
                         "utility_cloze": att.get("baseline_mcq_accuracy_cloze"),
                         "perplexity": att["baseline_clean_perplexity"]})
            rows.append({"model": "backdoored", "asr_triggered": att["asr_triggered"],
                         "asr_clean": att["asr_clean"], "utility": att["mcq_accuracy"],
                         "utility_cloze": att.get("mcq_accuracy_cloze"),
                         "perplexity": att["clean_perplexity"]})
    for d in sorted((run / "defend").glob("*/metrics.json")) if (run / "defend").is_dir() \
            else []:
        m = _read(d)
        if m and "asr_triggered_after" in m:
            rows.append({"model": f"after {m['defense']}",
                         "asr_triggered": m["asr_triggered_after"],
                         "asr_clean": m.get("asr_clean_after"),
                         "utility": m["mcq_accuracy_after"],
                         "utility_cloze": m.get("mcq_accuracy_cloze_after"),
                         "perplexity": m.get("clean_perplexity_after"),
                         "asr_before": m["asr_triggered_before"],
                         **({"asr_strict": m["asr_strict_after"]}
                            if "asr_strict_after" in m else {})})
    return rows


# ---- plots made from raw results -------------------------------------------------------
def uncertainty_plots(run: Path) -> list[tuple[Path, str]]:
    """Answer-distribution histograms, entropy shift and reliability diagram of the
    uncertainty backdoor (from ``attack/probs.safetensors``)."""
    src = run / "attack" / "probs.safetensors"
    if not src.is_file():
        return []
    p = load_arrays(src)
    gold = p["gold"].long()
    out_dir = run / "report_plots"
    made = []
    k = p["clean"].shape[1]
    letters = [chr(ord("A") + i) for i in range(k)]
    fig, ax = figure(5.5)
    width = 0.2
    for j, (key, label) in enumerate((("baseline_clean", "clean model, clean"),
                                      ("baseline_triggered", "clean model, triggered"),
                                      ("clean", "backdoored, clean"),
                                      ("triggered", "backdoored, triggered"))):
        shares = torch.bincount(p[key].argmax(-1), minlength=k).float() / len(gold)
        ax.bar([i + (j - 1.5) * width for i in range(k)], shares.tolist(), width, label=label)
    ax.set_xticks(range(k), letters)
    ax.set_ylabel("share of top answers")
    ax.legend(fontsize=7)
    made.append((save_figure(fig, out_dir / "answer_histogram.png"),
                 "Top-answer distribution, clean vs triggered"))

    from .scoring import entropy

    fig, ax = figure(5.5)
    for key, label in (("clean", "clean prompts"), ("triggered", "triggered prompts")):
        ax.hist(entropy(p[key]).tolist(), bins=20, alpha=0.6, label=label)
    ax.axvline(float(torch.log(torch.tensor(float(k)))), color="k", ls=":", lw=1,
               label="uniform")
    ax.set_xlabel("entropy of the answer distribution (nats), backdoored model")
    ax.set_ylabel("questions")
    ax.legend(fontsize=8)
    made.append((save_figure(fig, out_dir / "entropy_shift.png"), "Entropy shift"))

    fig, ax = figure(4.5, 4.0)
    for key, label in (("clean", "clean prompts"), ("triggered", "triggered prompts")):
        conf, pred = p[key].max(-1)
        correct = (pred == gold).float()
        edges = torch.linspace(0, 1, 11)
        xs, ys = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (conf > lo) & (conf <= hi)
            if m.any():
                xs.append(float(conf[m].mean()))
                ys.append(float(correct[m].mean()))
        ax.plot(xs, ys, marker="o", label=label)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    made.append((save_figure(fig, out_dir / "reliability.png"), "Reliability diagram"))
    return made


def persistence_plot(run: Path) -> list[tuple[Path, str]]:
    """ASR after each epoch of every defense that recorded a curve."""
    return [(p, f"Persistence: {p.parent.name}")
            for p in sorted(run.glob("defend/*/persistence.png"))]


def collect_plots(run: Path) -> list[tuple[Path, str]]:
    plots = uncertainty_plots(run)
    plots += [(run / rel, cap) for rel, cap in STAGE_PLOTS if (run / rel).is_file()]
    plots += persistence_plot(run)
    return plots


def model_cards(run: Path) -> list[tuple[str, str]]:
    return [(str(p.relative_to(run).parent), p.read_text("utf-8"))
            for p in sorted(run.glob("*/*/README.md")) + sorted(run.glob("defend/*/*/README.md"))
            if p.is_file()]


# ---- writers ------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.35em .7em;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:470px}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:30em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.6em 1em}
"""


STRICT_NOTE = ("Uncertainty backdoor: ASR = share of held-out questions whose answer entropy "
               "rises by at least the margin with the trigger; strict ASR also keeps the top "
               "answer (the attack's own success). A defense is judged on ASR: answers left flat "
               "with a moved top answer are no repair.")


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    cols = [("model", "model"), ("asr_triggered", "ASR with trigger")]
    if any("asr_strict" in r for r in rows):
        cols.append(("asr_strict", "strict ASR (top answer kept)"))
    cols += [("asr_clean", "ASR without trigger"), ("utility", "clean utility (MCQ acc.)")]
    if any(r.get("utility_cloze") is not None for r in rows):  # letter-free MCQ accuracy
        cols.append(("utility_cloze", "MCQ acc., option texts"))
    return cols + [("perplexity", "clean perplexity")]


def _has_strict(cols: Sequence[tuple[str, str]]) -> bool:
    return any(k == "asr_strict" for k, _ in cols)


SCAN_COLUMNS = [("scan", "scan"), ("scanner", "scanner"), ("verdict", "verdict"),
                ("score", "score"), ("threshold", "threshold"),
                ("found", "target (inverted unless marked)"), ("seconds", "seconds")]


DETECT_COLUMNS = [("detection", "detection"), ("detector", "detector"), ("prompts", "prompts"),
                  ("flagged_share", "flagged"), ("threshold", "threshold"),
                  ("roc_auc", "ROC-AUC"), ("tpr", "TPR"), ("fpr", "FPR"),
                  ("blame_hit", "trigger blamed")]


def _table_html(rows: Sequence[dict[str, Any]],
                cols: Sequence[tuple[str, str]] | None = None) -> str:
    cols = cols or _columns(rows)
    head = "<tr>" + "".join(f"<th>{html.escape(t)}</th>" for _, t in cols) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k, _ in cols)
                   + "</tr>" for r in rows)
    note = f"<p>{html.escape(STRICT_NOTE)}</p>" if _has_strict(cols) else ""
    return f"<table class='headline'>{head}{body}</table>{note}"


def _stage_cost(run: Path, name: str, rec: dict[str, Any]) -> str:
    """'attack 412 s, 2.1 GB, 350 tokens/s': a stage's time, peak resident memory and, for
    a training stage, its training throughput."""
    out = f"{name} {rec.get('wall_s', 0):.0f} s"
    if rec.get("peak_rss_gb") is not None:
        out += f", {rec['peak_rss_gb']:.1f} GB"
    metrics = _read(run / name.replace(".", "/") / "metrics.json") or {}
    tps = (metrics.get("training") or {}).get("tokens_per_s")
    if tps:
        out += f", {tps:.0f} tokens/s"
    return out


def _table_md(rows: Sequence[dict[str, Any]],
              cols: Sequence[tuple[str, str]] | None = None) -> list[str]:
    cols = cols or _columns(rows)
    lines = ["| " + " | ".join(t for _, t in cols) + " |",
             "|---|" + "---:|" * (len(cols) - 1)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return lines + (["", STRICT_NOTE] if _has_strict(cols) else [])


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _describe(run: Path) -> str:
    cfg = _read(run / "resolved.json") or {}
    att = cfg.get("attack") or {}
    kind = att.get("kind", "?")
    trig = att.get("trigger", "?")
    tgt = att.get("target", "uncertainty" if kind == "uncertainty" else "?")
    return f"{kind} backdoor, trigger <code>{html.escape(str(trig))}</code>, target " \
           f"<code>{html.escape(str(tgt))}</code>, model <code>" \
           f"{html.escape(str(cfg.get('model') or att.get('model') or '?'))}</code>"


def _found(run: Path, name: str, depth: int) -> list[Path]:
    """``name`` in ``run`` and in its folders up to ``depth`` levels down, shallowest first."""
    return [run / name] + [p for level in range(1, depth + 1)
                           for p in sorted(run.glob("*/" * level + name))]


def scan_rows(run: Path) -> list[dict[str, Any]]:
    """One row per scan in the run (``scan.json`` at its top or one folder down): scanner,
    verdict, score, threshold and what it found."""
    from .scan.base import finding

    rows = []
    for path in _found(run, "scan.json", 1):
        res = _read(path)
        if isinstance(res, dict) and "scanner" in res:
            ev = res.get("evidence") or {}
            rows.append({"scan": str(path.parent.relative_to(run)) or ".",
                         "scanner": res["scanner"], "verdict": res.get("verdict"),
                         "score": res.get("score"), "threshold": res.get("threshold"),
                         "found": finding(ev),
                         "seconds": res.get("seconds")})
    return rows


def detect_rows(run: Path) -> list[dict[str, Any]]:
    """One row per input-detection run (``detect.json`` up to two folders down): detector,
    prompts, share flagged, threshold and, where the trigger was planted, ROC-AUC, TPR, FPR
    and how often the trigger was blamed."""
    rows = []
    for path in _found(run, "detect.json", 2):
        res = _read(path)
        if isinstance(res, dict) and "detector" in res:
            rows.append({"detection": str(path.parent.relative_to(run)) or ".",
                         **{k: res.get(k) for k, _ in DETECT_COLUMNS[1:]}})
    return rows


UTILITY_COLUMNS = [("where", "run"), ("task", "task"), ("metric", "metric"),
                   ("model", "model (95% CI)"), ("repaired", "repaired (95% CI)")]


def _with_interval(m: dict[str, Any] | None, metric: str) -> str | None:
    if not m or m.get(metric) is None:
        return None
    ci = m.get(f"{metric}_ci95")
    return f"{m[metric]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def utility_rows(run: Path) -> list[dict[str, Any]]:
    """One row per lm-evaluation-harness task metric (``eval utility`` runs, and ``eval
    defense --utility-tasks`` with the repaired model beside the suspect), up to two folders
    down."""
    rows = []
    for path in _found(run, "metrics.json", 2) + _found(run, "eval_defense.json", 2):
        res = _read(path)
        if not isinstance(res, dict) or not isinstance(res.get("tasks"), dict):
            continue
        for task, m in res["tasks"].items():
            pair = isinstance(m, dict) and "after" in m
            first = (m.get("before") if pair else m) or {}
            for metric in [k for k in first if not k.endswith(("_stderr", "_hits", "_ci95"))
                           and k != "n"]:
                rows.append({"where": str(path.parent.relative_to(run)) or ".", "task": task,
                             "metric": metric, "model": _with_interval(first, metric),
                             "repaired": _with_interval(m.get("after"), metric) if pair
                             else None})
    return rows


def write_report(runs: Sequence[str | Path], out_dir: str | Path, *,
                 title: str = "backdoorlab report") -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir`` for one or more runs."""
    out = Path(out_dir)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p class='warn'>The models studied here carry backdoors planted for research. "
             "Do not deploy them.</p>",
             f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')} by backdoorlab.</p>"]
    md = [f"# {title}", "", "The models studied here carry backdoors planted for research.", ""]
    for run in map(Path, runs):
        name = run.name
        rows = headline_rows(run)
        parts.append(f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2>"
                     f"<p>{_describe(run)}</p>")
        md += [f"## {name}", ""]
        if rows:
            parts.append(_table_html(rows))
            md += _table_md(rows) + [""]
        for title, found, cols in (
                ("Scans (no trigger given)", scan_rows(run), SCAN_COLUMNS),
                ("Input detection (prompts that carry a trigger)", detect_rows(run),
                 DETECT_COLUMNS),
                ("Utility (lm-evaluation-harness tasks)", utility_rows(run), UTILITY_COLUMNS)):
            if found:
                parts.append(f"<h3>{html.escape(title)}</h3>" + _table_html(found, cols))
                md += [f"### {title}", ""] + _table_md(found, cols) + [""]
        bench = run / "bench.md"
        if bench.is_file():
            text = bench.read_text("utf-8")
            parts.append(f"<h3>Scanners on the zoo</h3><pre>{html.escape(text)}</pre>")
            md += ["### Scanners on the zoo", "", text, ""]
        stages = _read(run / "stages.json") or {}
        if stages:
            line = "Stage wall time and peak memory: " + ", ".join(
                _stage_cost(run, k, v) for k, v in stages.items() if not v.get("running"))
            parts.append(f"<p>{html.escape(line)}</p>")
            md += [line, ""]
        plots = collect_plots(run)
        if plots:
            parts.append("<h3>Plots</h3>")
            md += ["### Plots", ""]
        for path, caption in plots:
            parts.append(f"<figure><img src='{_img(path)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            rel = path.relative_to(out) if path.is_relative_to(out) else path
            md.append(f"![{caption}]({rel})")
        md.append("")
        cards = model_cards(run)
        if cards:
            parts.append("<h3>Model cards</h3>")
            for where, text in cards:
                parts.append(f"<details><summary>{html.escape(where)}</summary>"
                             f"<pre>{html.escape(text)}</pre></details>")
            md += ["### Model cards", ""] + [f"- `{w}/README.md`" for w, _ in cards] + [""]
        cfg = _read(run / "resolved.json")
        if cfg is not None:
            text = json.dumps(cfg, indent=2)
            parts.append(f"<h3>Configuration</h3><pre>{html.escape(text)}</pre>")
            md += ["### Configuration", "", "```json", text, "```", ""]
    parts.append("</body></html>")
    html_path = atomic_write_text(out / "report.html", "\n".join(parts))
    md_path = atomic_write_text(out / "report.md", "\n".join(md))
    return html_path, md_path
