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
import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from .answer import (Answer, ComboAnswer, answer, config_text, feasible, loss_text, pareto_front,
                     speed_text)
from .messages import first_line
from .presets import RANDOM_WEIGHTS_NOTE, is_preset
from .record import StudyRecord, TrialRecord, TrialStatus
from .search.results import write_atomically
from .search.studies import Studies, StudiesError
from .setting import Mode

MIN_IMPORTANCE_TRIALS = 4  # completed, distinct trials needed for parameter importances
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
COLORS = {"feasible": "#1f77b4", "infeasible": "#b0b0b0", "pruned": "#c9b28f",
          "front": "#ff7f0e", "chosen": "#d62728", "budget": "#2ca02c", "required": "#9467bd"}


# -- reading the studies -----------------------------------------------------------------------


@dataclass
class ComboStudy:
    study: optuna.Study
    record: StudyRecord
    trials: list[TrialRecord]
    frozen: dict[int, FrozenTrial]  # for the trials' artifacts

    @property
    def combo(self) -> str:
        return self.record.combo

    @property
    def scored(self) -> list[TrialRecord]:
        """Original trials with a speedup and a loss (complete, or stopped for their loss)."""
        return [t for t in self.trials if t.original and t.speed is not None
                and t.quality is not None]


@dataclass
class GoalGroup:
    answer: Answer
    combos: list[ComboStudy]  # in the answer's order

    def study_of(self, choice) -> ComboStudy:
        """The study a choice (answer.Choice) was made in, by its name: a combo may have
        several studies (runs that searched other spaces)."""
        return next(c for c in self.combos if c.study.study_name == choice.study)

    def answer_of(self, study: ComboStudy) -> ComboAnswer:
        """The answer's entry for this combo's study."""
        return self.answer.combos[self.combos.index(study)]


@dataclass
class SettingGroup:
    setting: object  # tuner.setting.Setting
    devices: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    goals: list[GoalGroup] = field(default_factory=list)

    @property
    def answers(self) -> list[Answer]:
        return [g.answer for g in self.goals]

    @property
    def title(self) -> str:
        s = self.setting
        return (f"{s.pipe} · {s.scheduler} · {s.steps} steps · {s.height}x{s.width} · "
                f"batch {s.batch_size}")


def gather(storage) -> tuple[list[SettingGroup], int]:
    """The tuner's studies grouped by setting and goal, each group with its answer; and how
    many other studies were skipped."""
    from .accelerators import COMBOS

    order = {name: i for i, name in enumerate(COMBOS)}
    groups: dict[str, dict[str, list[StudyRecord]]] = {}
    skipped = 0
    for frozen in storage.get_all_studies():
        if not StudyRecord.is_tuner_study(frozen.user_attrs):
            skipped += 1
            continue
        record = StudyRecord.from_attrs(frozen.study_name, frozen.user_attrs)
        groups.setdefault(record.setting.key, {}).setdefault(record.goal.key, []).append(record)
    result = []
    for by_goal in groups.values():
        first = next(iter(by_goal.values()))[0]
        group = SettingGroup(first.setting)
        for records in by_goal.values():
            records.sort(key=lambda r: (order.get(r.combo, len(order)), r.combo))
            combos = []
            for record in records:
                study = optuna.load_study(study_name=record.name, storage=storage)
                frozen = study.get_trials(deepcopy=False)
                combos.append(ComboStudy(study, record, [TrialRecord.from_trial(t)
                                                         for t in frozen],
                                         {t.number: t for t in frozen}))
                if record.device and record.device not in group.devices:
                    group.devices.append(record.device)
                group.versions = group.versions or record.versions
            notes = [RANDOM_WEIGHTS_NOTE] if is_preset(record.setting.pipe) else []
            found = answer(record.setting, record.goal, [(c.record, c.trials) for c in combos],
                           notes)
            group.goals.append(GoalGroup(found, combos))
        group.goals.sort(key=lambda g: (g.answer.goal.mode, g.answer.goal.key))
        result.append(group)
    result.sort(key=lambda g: g.title)
    return result, skipped


# -- figures -----------------------------------------------------------------------------------


def _hover(t: TrialRecord) -> str:
    text = f"trial {t.number}<br>{html.escape(config_text(t.config))}"
    if t.speed is not None:
        text += f"<br>speedup {speed_text(t.speed)}"
    if t.quality is not None:
        text += f"<br>loss {loss_text(t.quality.loss)}"
    if t.pruned:
        text += f"<br>pruned: {t.pruned.text}"
    return text


def _layout(fig, title: str, x: str, y: str) -> None:
    fig.update_layout(title=dict(text=title, x=0.02), template="plotly_white",
                      margin=dict(l=60, r=45, t=50, b=50), height=420,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"),
                      modebar=dict(orientation="v"), xaxis_title=x, yaxis_title=y)


def _errors(values, lows, highs) -> dict:
    return dict(type="data", symmetric=False, array=[h - v for v, h in zip(values, highs)],
                arrayminus=[v - lo for v, lo in zip(values, lows)], thickness=1, width=0)


def _points(fig, name: str, trials: list[TrialRecord], color: str, symbol: str, *,
            x=None, size: int = 8) -> None:
    import plotly.graph_objects as go

    speeds = [t.speed.speedup for t in trials]
    xs = x or [t.quality.loss for t in trials]
    fig.add_trace(go.Scatter(
        x=[v.value for v in xs] if x is None else xs, y=[s.value for s in speeds],
        mode="markers", name=name, marker=dict(color=color, symbol=symbol, size=size),
        error_y=_errors([s.value for s in speeds], [s.low for s in speeds],
                        [s.high for s in speeds]),
        error_x=_errors([v.value for v in xs], [v.low for v in xs], [v.high for v in xs])
        if x is None else None,
        text=[_hover(t) for t in trials], hoverinfo="text"))


def scatter(c: ComboStudy, g: GoalGroup):
    """Speedup against loss, both with their 95 % intervals: every scored trial, the feasible
    Pareto front, the choice."""
    import plotly.graph_objects as go

    goal, chosen = g.answer.goal, g.answer_of(c).choice
    points = c.scored
    ok = feasible(points, goal)
    _points(fig := go.Figure(), "infeasible or stopped for its loss",
            [t for t in points if t not in ok], COLORS["infeasible"], "x")
    _points(fig, "feasible", ok, COLORS["feasible"], "circle")
    front = sorted(pareto_front(points, goal), key=lambda t: t.quality.loss.value)
    fig.add_trace(go.Scatter(
        x=[t.quality.loss.value for t in front], y=[t.speed.value for t in front],
        mode="lines+markers", name="Pareto front (feasible)", line=dict(shape="hv"),
        marker=dict(color=COLORS["front"], size=11, line=dict(width=1, color="black")),
        text=[_hover(t) for t in front], hoverinfo="text"))
    if chosen is not None:
        fig.add_trace(go.Scatter(
            x=[chosen.quality.loss.value], y=[chosen.speedup], mode="markers",
            name="chosen (confirmed speedup)" if chosen.confirmed else "chosen",
            marker=dict(color=COLORS["chosen"], symbol="star", size=18,
                        line=dict(width=1, color="black")),
            error_y=_errors([chosen.speedup], [chosen.speed.speedup.low],
                            [chosen.speed.speedup.high]),
            hoverinfo="text", text=[f"trial {chosen.trial}<br>{speed_text(chosen.speed)}"]))
    fig.add_vline(x=goal.loss_budget, line_dash="dash", line_color=COLORS["budget"],
                  annotation_text=f"loss budget {goal.loss_budget:.1%}",
                  annotation_position="top left")
    _required_line(fig, g.answer.required_speedup)
    _layout(fig, f"{c.combo}: speedup vs {goal.metric} loss (95 % intervals)",
            f"{goal.metric} loss (relative)", "speedup (x)")
    fig.update_xaxes(tickformat=".1%")
    return fig


def _required_line(fig, required: float | None) -> None:
    if required is not None:
        fig.add_hline(y=required, line_dash="dot", line_color=COLORS["required"],
                      annotation_text=f"required {required:.2f}x",
                      annotation_position="bottom right")


def history(c: ComboStudy, g: GoalGroup):
    """Speedup per evaluation, with pruned ones, and the best feasible speedup so far."""
    import plotly.graph_objects as go

    goal = g.answer.goal
    done = sorted((t for t in c.trials if t.original and t.speed is not None),
                  key=lambda t: t.number)
    ok = feasible(done, goal)
    fig = go.Figure()
    for name, subset, color, symbol in (
            ("pruned", [t for t in done if t.pruned], COLORS["pruned"], "triangle-down"),
            ("infeasible", [t for t in done if not t.pruned and t not in ok],
             COLORS["infeasible"], "x"),
            ("feasible", ok, COLORS["feasible"], "circle")):
        _points(fig, name, subset, color, symbol, x=[t.number for t in subset])
    best, xs, ys = -math.inf, [], []
    for t in done:
        if t in ok:
            best = max(best, t.speed.value)
        if best > -math.inf:
            xs.append(t.number)
            ys.append(best)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best feasible so far",
                             line=dict(color=COLORS["front"], shape="hv", width=2)))
    _required_line(fig, g.answer.required_speedup)
    _layout(fig, f"{c.combo}: optimisation history", "trial", "speedup (x)")
    return fig


def importances(c: ComboStudy):
    """Parameter importances for speedup and for loss, or a note saying why there are none."""
    import plotly.graph_objects as go

    done = [t for t in c.trials if t.original and t.complete]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return (f"Too few completed trials for parameter importances ({len(done)} distinct; "
                f"at least {MIN_IMPORTANCE_TRIALS} needed).")
    found = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for target, direction, value in (
                    ("speedup", "maximize", lambda t: t.speed.value),
                    ("loss", "minimize", lambda t: t.quality.loss.value)):
                # One single-objective copy per target, so the evaluator knows which way is good.
                copy = optuna.create_study(direction=direction)
                copy.add_trials([optuna.trial.create_trial(
                    params=c.frozen[t.number].params,
                    distributions=c.frozen[t.number].distributions, value=value(t))
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
h1 { margin-top: 24px; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
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
.pair { border: 1px solid #ddd; padding: 4px; border-radius: 4px; max-width: 332px; }
.pair .cells { display: flex; gap: 4px; }
.pair .prompt { margin: 4px 0 0; font-size: 0.8em; color: #333; }
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

    def images(self, c: ComboStudy, number: int | None, label: str) -> None:
        """The baseline's images beside trial `number`'s, each with its prompt."""
        from .artifacts import images_of

        if number is None:
            return
        if self.store is None:
            self.add('<p class="note">No sample images: these studies have no artifact store '
                     '(runs with --no-artifacts, or --storage without --artifacts).</p>')
            return
        storage = c.study._storage  # noqa: SLF001 - FrozenTrial artifacts need the storage
        try:
            base = images_of(self.store, c.study, baseline=True)
            chosen = images_of(self.store, c.frozen[number], storage=storage)
        except Exception as err:  # an unreadable store must not lose the rest of the report
            self.add(f'<p class="note">Sample images could not be read: '
                     f'{html.escape(type(err).__name__)}.</p>')
            return
        if not chosen:
            self.add(f'<p class="note">No sample images stored for {html.escape(label)} '
                     f'(trial {number}; it ran with --no-artifacts).</p>')
            return
        if not base:
            self.add('<p class="note">No baseline images stored for this study.</p>')
        prompts = c.record.prompts
        pairs = []
        for i in range(max(len(base), len(chosen))):
            cells = []
            for caption, found in (("baseline", base), (label, chosen)):
                if i < len(found):
                    data = base64.b64encode(found[i].data).decode("ascii")
                    cells.append(f'<figure><img alt="{html.escape(caption)} image {i}" '
                                 f'src="data:{found[i].mimetype};base64,{data}">'
                                 f'<figcaption>{html.escape(caption)} #{i}</figcaption></figure>')
            prompt = f'<p class="prompt">{html.escape(prompts[i])}</p>' \
                if i < len(prompts) else ""
            pairs.append(f'<div class="pair"><div class="cells">{"".join(cells)}</div>'
                         f'{prompt}</div>')
        self.add(f'<div class="pairs">{"".join(pairs)}</div>')


def _goal_title(a: Answer) -> str:
    budget = a.goal.budget
    if a.goal.mode == Mode.MAX_SPEEDUP:
        return f"Fastest within {budget}"
    return f"Required speedup {a.requirement} within {budget}"


def _choice_table(page: _Page, g: GoalGroup) -> None:
    a = g.answer

    def row(label: str, combo, choice, css: str = "") -> str:
        counts = (f'<td class="num">{combo.evaluations}</td><td class="num">{combo.pruned}</td>'
                  if combo else '<td class="num">–</td><td class="num">–</td>')
        if choice is None:
            return (f'<tr class="{css}"><td>{html.escape(label)}</td>{counts}'
                    f'<td colspan="6" class="note">'
                    f'{html.escape(combo.missing if combo else "no feasible configuration")}'
                    f'</td></tr>')
        confirmed = "yes" if choice.confirmed else "no"
        return (f'<tr class="{css}"><td>{html.escape(label)}</td>{counts}'
                f'<td class="num">{choice.trial}</td>'
                f'<td class="num">{html.escape(speed_text(choice.speed))}</td>'
                f'<td class="num">{html.escape(loss_text(choice.quality.loss))}</td>'
                f'<td class="num">{choice.baseline_latency:.3f} s &rarr; '
                f'{choice.latency:.3f} s</td><td>{confirmed}</td>'
                f'<td><code>{html.escape(config_text(choice.config))}</code></td></tr>')

    rows = [row(a.name_of(c), c, c.choice) for c in a.combos]
    label = f"overall: {a.name_of(a.chosen)}" if a.chosen else "overall"
    rows.append(row(label, None, a.chosen, "overall"))
    page.add('<table><tr><th>combo</th><th>evaluations</th><th>pruned</th><th>chosen trial</th>'
             '<th>speedup [95 % interval]</th>'
             f'<th>{html.escape(a.goal.metric)} loss [95 % interval]</th>'
             '<th>latency per batch (plain &rarr; accelerated)</th><th>confirmed</th>'
             '<th>params</th></tr>' + "".join(rows) + "</table>")
    page.add(f"<p>{html.escape(a.summary())}</p>")
    if a.status is not None:
        css = "status final" if a.status.final else "status warning"
        page.add(f'<p class="{css}">{html.escape(a.status.text())}</p>')
    page.add('<p class="meta">Speedup: plain over accelerated latency in bracketed pairs '
             '(geometric mean, 95 % interval); confirmed: measured again against the other '
             'candidates, interleaved, before the answer was written. The accelerated latency '
             'is the plain latency divided by the speedup. Loss: from paired per-image scores, '
             '95 % interval over the prompts, as the search measured it; the answer\'s loss '
             '(above) is measured once more on held-out seeds, since the search\'s estimate '
             'is the one it was selected on.</p>')
    for note in a.notes:
        if note != RANDOM_WEIGHTS_NOTE:
            page.add(f'<p class="warning">{html.escape(note)}</p>')


def _setting_header(page: _Page, group: SettingGroup, anchor: str) -> None:
    s = group.setting
    page.add(f'<h2 id="{anchor}">{html.escape(group.title)}</h2>')
    rows = [("model", s.pipe), ("scheduler", s.scheduler), ("steps", s.steps),
            ("resolution", f"{s.height}x{s.width}"), ("batch size", s.batch_size),
            ("samples scored", s.num_samples), ("seed", s.seed),
            ("guidance scale", s.guidance_scale), ("prompts", s.prompts or "–"),
            ("CLIP model", s.clip_model or "–"),
            ("device", ", ".join(group.devices) or "unknown"),
            ("versions", ", ".join(f"{k} {v}" for k, v in group.versions.items()) or "–")]
    page.add("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td>"
                                 f"</tr>" for k, v in rows) + "</table>")
    if is_preset(s.pipe):
        page.add(f'<p class="warning random-weights"><b>Random weights.</b> '
                 f'{html.escape(RANDOM_WEIGHTS_NOTE)}</p>')


def _combo_section(page: _Page, g: GoalGroup, c: ComboStudy) -> None:
    combo = g.answer_of(c)
    name = g.answer.name_of(combo)
    failed = sum(1 for t in c.trials if t.state == TrialStatus.FAIL and t.evaluated)
    page.add(f"<h4>{html.escape(name)}</h4>")
    page.add(f'<p class="meta">Study <code>{html.escape(c.study.study_name)}</code>: '
             f'{combo.evaluations} evaluations ({len([t for t in c.trials if t.complete])} '
             f'complete, {combo.pruned} pruned, {failed} failed or invalid).</p>')
    if not any(t.speed is not None for t in c.trials):
        page.add('<p class="note">No evaluated trials yet.</p>')
        return
    page.add('<div class="plots">')
    page.figure(scatter(c, g))
    page.figure(history(c, g))
    imp = importances(c)
    if isinstance(imp, str):
        page.add(f'<p class="note wide">{html.escape(imp)}</p>')
    else:
        page.figure(imp, wide=True)
    page.add("</div>")
    if combo.choice is not None:
        page.add(f"<p>Baseline vs chosen ({html.escape(name)}, trial "
                 f"{combo.choice.trial}):</p>")
        page.images(c, combo.choice.trial, f"{name} trial {combo.choice.trial}")


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
            page.add(f"<h3>{html.escape(_goal_title(g.answer))}</h3>")
            _choice_table(page, g)
            chosen = g.answer.chosen
            if chosen is not None:
                name = g.answer.name_of(chosen)
                page.add(f"<p>Baseline vs overall choice ({html.escape(name)}, trial "
                         f"{chosen.trial}):</p>")
                page.images(g.study_of(chosen), chosen.trial, f"chosen: {name}")
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
    if out.is_dir():
        out = out / "report.html"
    page_html = render(groups, storage=storage, store=found.artifact_store(), source=found.url,
                       skipped=skipped)
    write_atomically(out, page_html)
    figures = page_html.count('class="plotly-graph-div"')
    return Written(out, len(groups), sum(len(g.combos) for s in groups for g in s.goals), figures)


__all__ = ["Written", "gather", "render", "write_report"]
