"""`tuner report`: one self-contained HTML page for a studies folder (or storage URL).

Plotly's JavaScript is inlined once and the sample images are inlined as base64, so the page
needs no network to view. For each setting (the studies' user attribute "setting") and goal:
a header (model, scheduler, steps, resolution, device), the chosen configuration per combo and
overall, the baseline's images beside the chosen ones; and per combo a speedup-vs-loss scatter
with the feasible Pareto front, the optimisation history and the parameter importances.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .dashboard import Studies, locate
from .presets import RANDOM_WEIGHTS_NOTE, is_preset
from .messages import first_line
from .search.results import write_atomically
from .search.runner import config_text
from .search.selection import choose, overall
from .search.studies import (Goal, StudiesError, counts_toward_budget, finished_count,
                             latest_baseline_latency)

MIN_IMPORTANCE_TRIALS = 4  # completed, distinct trials needed for parameter importances
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
COLORS = {"feasible": "#1f77b4", "infeasible": "#b0b0b0", "front": "#ff7f0e",
          "chosen": "#d62728", "budget": "#2ca02c", "required": "#9467bd"}


# -- reading the studies -----------------------------------------------------------------------


@dataclass
class ComboStudy:
    combo: str
    study: optuna.Study
    trials: list[FrozenTrial]
    choice: object  # selection.Choice

    @property
    def completed(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE and "speedup" in
                t.user_attrs and "loss" in t.user_attrs]


@dataclass
class GoalGroup:
    goal: dict
    required: float | None
    combos: list[ComboStudy]
    overall: ComboStudy | None = None
    met: bool | None = None

    @property
    def mode(self) -> str:
        return Goal(**self.goal).mode


@dataclass
class SettingGroup:
    setting: dict
    devices: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    goals: list[GoalGroup] = field(default_factory=list)

    @property
    def title(self) -> str:
        s = self.setting
        return (f"{s.get('pipe')} · {s.get('scheduler')} · {s.get('steps')} steps · "
                f"{s.get('height')}x{s.get('width')} · batch {s.get('batch_size')}")


def _key(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _required(goal: dict, studies: list[optuna.Study]) -> float | None:
    """The required speedup; for --req-time, against the latest measured baseline."""
    return Goal(**goal).required_speedup(latest_baseline_latency(studies))


def gather(storage) -> tuple[list[SettingGroup], int]:
    """The tuner's studies grouped by setting and goal; and how many other studies were skipped."""
    from .accelerators import COMBOS

    order = {name: i for i, name in enumerate(COMBOS)}
    groups: dict[str, dict[str, list]] = {}
    settings: dict[str, dict] = {}
    skipped = 0
    for frozen in storage.get_all_studies():
        attrs = frozen.user_attrs
        if not isinstance(attrs.get("setting"), dict) or not isinstance(attrs.get("goal"), dict) \
                or not attrs.get("combo"):
            skipped += 1
            continue
        key = _key(attrs["setting"])
        settings[key] = attrs["setting"]
        groups.setdefault(key, {}).setdefault(_key(attrs["goal"]), []).append(frozen)
    result = []
    for key, by_goal in groups.items():
        group = SettingGroup(settings[key])
        for frozens in by_goal.values():
            frozens.sort(key=lambda f: (order.get(f.user_attrs["combo"], len(order)),
                                        f.user_attrs["combo"]))
            studies = [optuna.load_study(study_name=f.study_name, storage=storage)
                       for f in frozens]
            goal = frozens[0].user_attrs["goal"]
            required = _required(goal, studies)
            combos = []
            for study in studies:
                trials = study.get_trials(deepcopy=False)
                combos.append(ComboStudy(study.user_attrs["combo"], study, trials,
                                         choose(trials, required)))
                device = study.user_attrs.get("device")
                if device and device not in group.devices:
                    group.devices.append(device)
                group.versions = group.versions or study.user_attrs.get("versions", {})
            index, best = overall([c.choice for c in combos], required)
            group.goals.append(GoalGroup(goal, required, combos,
                                         combos[index] if index is not None else None, best.met))
        group.goals.sort(key=lambda g: (g.mode, g.goal.get("metric", ""),
                                        g.goal.get("loss_budget", 0)))
        result.append(group)
    result.sort(key=lambda g: g.title)
    return result, skipped


# -- figures -----------------------------------------------------------------------------------


def _hover(t: FrozenTrial) -> str:
    a = t.user_attrs
    return (f"trial {t.number}<br>{html.escape(config_text(a.get('config', {})))}<br>"
            f"speedup {a['speedup']:.2f}x · loss {a['loss']:.2%}")


def _layout(fig, title: str, x: str, y: str) -> None:
    fig.update_layout(title=dict(text=title, x=0.02), template="plotly_white",
                      margin=dict(l=60, r=45, t=50, b=50), height=420,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"),
                      modebar=dict(orientation="v"), xaxis_title=x, yaxis_title=y)


def scatter(c: ComboStudy, goal: dict, required: float | None):
    """Speedup against loss: every completed trial, the feasible Pareto front, the choice."""
    import plotly.graph_objects as go

    from .search.objective import DUPLICATE_OF
    from .search.selection import feasible, pareto_front

    points = [t for t in c.completed if DUPLICATE_OF not in t.user_attrs]
    fig = go.Figure()
    for name, chosen_ones, color, symbol in (
            ("infeasible", [t for t in points if not feasible(t)], COLORS["infeasible"],
             "x"),
            ("feasible", [t for t in points if feasible(t)], COLORS["feasible"], "circle")):
        fig.add_trace(go.Scatter(
            x=[t.user_attrs["loss"] for t in chosen_ones],
            y=[t.user_attrs["speedup"] for t in chosen_ones], mode="markers", name=name,
            marker=dict(color=color, symbol=symbol, size=8),
            text=[_hover(t) for t in chosen_ones], hoverinfo="text"))
    front = sorted(pareto_front(c.trials), key=lambda t: t.user_attrs["loss"])
    fig.add_trace(go.Scatter(
        x=[t.user_attrs["loss"] for t in front], y=[t.user_attrs["speedup"] for t in front],
        mode="lines+markers", name="Pareto front (feasible)", line=dict(shape="hv"),
        marker=dict(color=COLORS["front"], size=11, line=dict(width=1, color="black")),
        text=[_hover(t) for t in front], hoverinfo="text"))
    chosen = c.choice.trial
    if chosen is not None:
        fig.add_trace(go.Scatter(
            x=[chosen.user_attrs["loss"]], y=[chosen.user_attrs["speedup"]], mode="markers",
            name="chosen", text=[_hover(chosen)], hoverinfo="text",
            marker=dict(color=COLORS["chosen"], symbol="star", size=18,
                        line=dict(width=1, color="black"))))
    budget = goal.get("loss_budget")
    if budget is not None:
        fig.add_vline(x=budget, line_dash="dash", line_color=COLORS["budget"],
                      annotation_text=f"loss budget {budget:.1%}",
                      annotation_position="top left")
    if required is not None:
        fig.add_hline(y=required, line_dash="dot", line_color=COLORS["required"],
                      annotation_text=f"required {required:.2f}x",
                      annotation_position="bottom right")
    _layout(fig, f"{c.combo}: speedup vs {goal.get('metric', '')} loss",
            f"{goal.get('metric', '')} loss (relative)", "speedup (x)")
    fig.update_xaxes(tickformat=".1%", rangemode="tozero")
    return fig


def history(c: ComboStudy, required: float | None):
    """Speedup per trial, and the best feasible speedup so far."""
    import plotly.graph_objects as go

    from .search.selection import feasible

    done = sorted(c.completed, key=lambda t: t.number)
    fig = go.Figure()
    for name, subset, color, symbol in (
            ("infeasible", [t for t in done if not feasible(t)], COLORS["infeasible"], "x"),
            ("feasible", [t for t in done if feasible(t)], COLORS["feasible"], "circle")):
        fig.add_trace(go.Scatter(
            x=[t.number for t in subset], y=[t.user_attrs["speedup"] for t in subset],
            mode="markers", name=name, marker=dict(color=color, symbol=symbol, size=8),
            text=[_hover(t) for t in subset], hoverinfo="text"))
    best, xs, ys = -math.inf, [], []
    for t in done:
        if feasible(t):
            best = max(best, t.user_attrs["speedup"])
        if best > -math.inf:
            xs.append(t.number)
            ys.append(best)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best feasible so far",
                             line=dict(color=COLORS["front"], shape="hv", width=2)))
    if required is not None:
        fig.add_hline(y=required, line_dash="dot", line_color=COLORS["required"],
                      annotation_text=f"required {required:.2f}x",
                      annotation_position="bottom right")
    _layout(fig, f"{c.combo}: optimisation history", "trial", "speedup (x)")
    return fig


def importances(c: ComboStudy):
    """Parameter importances for speedup and for loss, or a note saying why there are none."""
    import plotly.graph_objects as go

    from .search.objective import DUPLICATE_OF

    done = [t for t in c.completed if DUPLICATE_OF not in t.user_attrs]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return (f"Too few completed trials for parameter importances ({len(done)} distinct; "
                f"at least {MIN_IMPORTANCE_TRIALS} needed).")
    found = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for target, direction in (("speedup", "maximize"), ("loss", "minimize")):
                # One single-objective copy per target, so the evaluator knows which way is good.
                copy = optuna.create_study(direction=direction)
                copy.add_trials([optuna.trial.create_trial(
                    params=t.params, distributions=t.distributions, value=t.user_attrs[target])
                    for t in done])
                found[target] = optuna.importance.get_param_importances(copy)
    except Exception as err:  # e.g. every trial has the same parameters
        return f"Parameter importances could not be computed: {first_line(err)}"
    finally:
        optuna.logging.set_verbosity(verbosity)
    values = [v for imp in found.values() for v in imp.values()]
    if not values or not all(math.isfinite(v) for v in values):
        return "Parameter importances could not be computed (the trials do not vary enough)."
    names = sorted({n for imp in found.values() for n in imp},
                   key=lambda n: found["speedup"].get(n, 0))
    fig = go.Figure()
    for target, color in (("speedup", COLORS["feasible"]), ("loss", COLORS["front"])):
        fig.add_trace(go.Bar(y=names, x=[found[target].get(n, 0) for n in names], name=target,
                             orientation="h", marker_color=color))
    _layout(fig, f"{c.combo}: parameter importances ({len(done)} trials)", "importance", "")
    fig.update_layout(barmode="group", height=max(260, 90 + 45 * len(names)))
    return fig


# -- the page ----------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
h3 { margin-top: 32px; } h4 { margin: 28px 0 6px; }
.meta { color: #555; font-size: 0.92em; }
.warning { background: #fff4d6; border: 1px solid #e0b84c; padding: 8px 12px; border-radius: 4px; }
.note { color: #666; font-style: italic; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.overall td { font-weight: 600; background: #eef5ff; }
.plots { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.plots > .wide { grid-column: 1 / -1; }
.pairs { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.pair { display: flex; gap: 4px; border: 1px solid #ddd; padding: 4px; border-radius: 4px; }
.pair figure { margin: 0; text-align: center; font-size: 0.8em; color: #555; }
.pair img { width: 160px; height: auto; display: block; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


class _Page:
    def __init__(self, storage, store):
        self.storage, self.store = storage, store
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig, *, wide: bool = False) -> None:
        self.figures += 1
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                          div_id=f"figure-{self.figures}", default_height=f"{fig.layout.height}px")
        self.add(f'<div class="plot{" wide" if wide else ""}">{div}</div>')

    def images(self, c: ComboStudy, trial: FrozenTrial | None, label: str) -> None:
        from .artifacts import images_of

        if trial is None:
            return
        if self.store is None:
            self.add('<p class="note">No sample images: these studies have no artifact store '
                     '(runs with --no-artifacts, or --storage without --artifacts).</p>')
            return
        storage = c.study._storage  # noqa: SLF001 - FrozenTrial artifacts need the storage
        try:
            base = images_of(self.store, c.study, baseline=True)
            chosen = images_of(self.store, trial, storage=storage)
        except Exception as err:  # an unreadable store must not lose the rest of the report
            self.add(f'<p class="note">Sample images could not be read: '
                     f'{html.escape(type(err).__name__)}.</p>')
            return
        if not chosen:
            self.add(f'<p class="note">No sample images stored for {html.escape(label)} '
                     f'(trial {trial.number}; it ran with --no-artifacts).</p>')
            return
        if not base:
            self.add('<p class="note">No baseline images stored for this study.</p>')
        pairs = []
        for i in range(max(len(base), len(chosen))):
            cells = []
            for caption, found in (("baseline", base), (label, chosen)):
                if i < len(found):
                    data = base64.b64encode(found[i].data).decode("ascii")
                    cells.append(f'<figure><img alt="{html.escape(caption)} image {i}" '
                                 f'src="data:{found[i].mimetype};base64,{data}">'
                                 f'<figcaption>{html.escape(caption)} #{i}</figcaption></figure>')
            pairs.append(f'<div class="pair">{"".join(cells)}</div>')
        self.add(f'<div class="pairs">{"".join(pairs)}</div>')


def _fmt(value, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def _goal_title(g: GoalGroup) -> str:
    budget = f"{g.goal.get('metric')} loss ≤ {g.goal.get('loss_budget', 0):.1%}"
    if g.mode == "max_speedup":
        return f"Fastest within {budget}"
    req = f"{g.required:.2f}x" if g.required is not None else "?"
    if g.goal.get("req_time") is not None:
        req += f" ({g.goal['req_time']:g}s per batch)"
    return f"Required speedup {req} within {budget}"


def _choice_table(page: _Page, g: GoalGroup) -> None:
    rows = []

    def row(label: str, c: ComboStudy | None, css: str = "") -> str:
        t = c.choice.trial if c else None
        finished = finished_count(c.trials) if c else 0
        if t is None:
            return (f'<tr class="{css}"><td>{html.escape(label)}</td>'
                    f'<td class="num">{finished if c else "–"}</td>'
                    f'<td colspan="6" class="note">no feasible trial</td></tr>')
        a = t.user_attrs
        return (f'<tr class="{css}"><td>{html.escape(label)}</td><td class="num">{finished}</td>'
                f'<td class="num">{t.number}</td>'
                f'<td class="num">{_fmt(a.get("speedup"), ".2f", "x")}</td>'
                f'<td class="num">{_fmt(a.get("loss"), ".2%")}</td>'
                f'<td class="num">{_fmt(a.get("latency"), ".3f", " s")}</td>'
                f'<td class="num">{_fmt(a.get("baseline_latency"), ".3f", " s")}</td>'
                f'<td><code>{html.escape(config_text(a.get("config", {})))}</code></td></tr>')

    for c in g.combos:
        rows.append(row(c.combo, c))
    label = f"overall: {g.overall.combo}" if g.overall else "overall"
    rows.append(row(label, g.overall, "overall"))
    page.add('<table><tr><th>combo</th><th>trials</th><th>chosen trial</th><th>speedup</th>'
             f'<th>{html.escape(str(g.goal.get("metric")))} loss</th><th>latency</th>'
             '<th>baseline latency</th><th>params</th></tr>' + "".join(rows) + "</table>")
    if g.mode == "req_speedup" and g.overall is not None:
        verdict = "met" if g.met else "NOT met: the table shows the closest (fastest) feasible"
        page.add(f'<p>Requirement {html.escape(_fmt(g.required, ".2f", "x"))}: '
                 f'{html.escape(verdict)}.</p>')
    page.add('<p class="meta">Latency: seconds per batch (median of interleaved timed runs); '
             'speedup: plain over accelerated, measured in the same trial.</p>')


def _setting_header(page: _Page, group: SettingGroup, anchor: str) -> None:
    s = group.setting
    page.add(f'<h2 id="{anchor}">{html.escape(group.title)}</h2>')
    rows = [("model", s.get("pipe")), ("scheduler", s.get("scheduler")),
            ("steps", s.get("steps")), ("resolution", f"{s.get('height')}x{s.get('width')}"),
            ("batch size", s.get("batch_size")), ("samples scored", s.get("num_samples")),
            ("seed", s.get("seed")), ("guidance scale", s.get("guidance_scale")),
            ("device", ", ".join(group.devices) or "unknown"),
            ("versions", ", ".join(f"{k} {v}" for k, v in group.versions.items()) or "–")]
    page.add("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td>"
                                 f"</tr>" for k, v in rows) + "</table>")
    if is_preset(str(s.get("pipe", ""))):
        page.add(f'<p class="warning random-weights"><b>Random weights.</b> '
                 f'{html.escape(RANDOM_WEIGHTS_NOTE)}</p>')


def _combo_section(page: _Page, g: GoalGroup, c: ComboStudy) -> None:
    finished = finished_count(c.trials)
    failed = sum(1 for t in c.trials if t.state == TrialState.FAIL and counts_toward_budget(t))
    page.add(f"<h4>{html.escape(c.combo)}</h4>")
    page.add(f'<p class="meta">Study <code>{html.escape(c.study.study_name)}</code>: '
             f'{finished} finished trials ({len(c.completed)} completed, {failed} failed or '
             f'invalid).</p>')
    if not c.completed:
        page.add('<p class="note">No completed trials yet.</p>')
        return
    page.add('<div class="plots">')
    page.figure(scatter(c, g.goal, g.required))
    page.figure(history(c, g.required))
    imp = importances(c)
    if isinstance(imp, str):
        page.add(f'<p class="note wide">{html.escape(imp)}</p>')
    else:
        page.figure(imp, wide=True)
    page.add("</div>")
    if c.choice.trial is not None:
        page.add(f"<p>Baseline vs chosen ({html.escape(c.combo)}, trial "
                 f"{c.choice.trial.number}):</p>")
        page.images(c, c.choice.trial, f"{c.combo} trial {c.choice.trial.number}")


def render(groups: list[SettingGroup], *, storage, store, source: str, skipped: int = 0) -> str:
    """The whole page as a string."""
    from plotly.offline import get_plotlyjs

    page = _Page(storage, store)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.add("<h1>tuner report</h1>")
    page.add(f'<p class="meta">Studies: <code>{html.escape(source)}</code> · generated {now}'
             + (f" · {skipped} other studies skipped" if skipped else "") + "</p>")
    if not groups:
        page.add('<p class="note">No tuner studies found.</p>')
    page.add("<ul class=\"toc\">" + "".join(
        f'<li><a href="#setting-{i}">{html.escape(g.title)}</a></li>'
        for i, g in enumerate(groups)) + "</ul>")
    for i, group in enumerate(groups):
        _setting_header(page, group, f"setting-{i}")
        for g in group.goals:
            page.add(f"<h3>{html.escape(_goal_title(g))}</h3>")
            _choice_table(page, g)
            if g.overall is not None:
                t = g.overall.choice.trial
                page.add(f"<p>Baseline vs overall choice ({html.escape(g.overall.combo)}, trial "
                         f"{t.number}):</p>")
                page.images(g.overall, t, f"chosen: {g.overall.combo}")
            for c in g.combos:
                _combo_section(page, g, c)
    body = "\n".join(page.parts)
    title = "tuner report" + (f": {groups[0].title}" if len(groups) == 1 else "")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body>\n{body}\n</body></html>\n")


@dataclass(frozen=True)
class Written:
    path: Path
    settings: int
    studies: int
    figures: int


def write_report(found: Studies, out: str | Path | None = None) -> Written:
    """Render the report of `found` into `out` (default ``<studies>/report.html``)."""
    storage = found.storage()
    groups, skipped = gather(storage)
    if not groups:
        raise StudiesError(f"no tuner studies in {found.url}"
                           + (f" ({skipped} other studies)" if skipped else ""))
    if out is None:
        out = (found.folder / "report.html") if found.folder is not None else Path("report.html")
    out = Path(out)
    page_html = render(groups, storage=storage, store=found.artifact_store(), source=found.url,
                       skipped=skipped)
    write_atomically(out, page_html)
    figures = page_html.count('class="plotly-graph-div"')
    return Written(out, len(groups), sum(len(g.combos) for s in groups for g in s.goals), figures)


__all__ = ["Written", "gather", "locate", "render",
           "write_report"]
