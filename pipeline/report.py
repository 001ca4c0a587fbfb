"""``python -m pipeline.report OUTPUT_DIR``: one HTML page that says what a run found.

The page, ``OUTPUT_DIR/report.html``, is a single self-contained file (styles inline, charts
as base64 PNG, no scripts, no network), so it can be mailed or archived with the results and
still open years later. It reads ``run.json``, ``errors.csv``, ``detections.parquet`` and the
metadata columns of ``windows-*.parquet``, and shows

- the run: audio hours, files, failures, model, target classes covered and missing;
- detections by species and hour of day (recordings whose names give a start time);
- detections per species; a timeline of the top species in each busiest recording;
- the score distribution per species, with the run's ``--min_score``.

Where there is nothing to draw (no detections, no start times) a short note says so.
Charts use matplotlib's object API (the Agg renderer, no pyplot state), colour-blind-safe
colours (cividis and the Okabe-Ito palette), and label every axis.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import html
import io
import json
import pathlib
import sys
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib import cm, colors
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline.run import RUN_JSON
from transforms import detections as det
from transforms.sinks import ERRORS_CSV, WINDOWS_PREFIX, write_atomically

REPORT = 'report.html'
TOP_SPECIES = 30          # rows of the heatmap and the bar chart
TIMELINE_RECORDINGS = 12  # panels of the timeline
TIMELINE_SPECIES = 6      # rows per timeline panel
DISTRIBUTION_SPECIES = 15
MIN_BOXED = 5             # detections a species needs for a box plot
BLUE, ORANGE, GREY = '#0072B2', '#E69F00', '#BBBBBB'  # Okabe-Ito blue and orange
SCORES_CMAP = 'cividis'
_EFFORT_COLUMNS = ['source', 'start_s', 'end_s', 'recorded_at']
_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.meta, .note, figcaption { color: #555; } .note { font-style: italic; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.95em; }
th, td { text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #e4e4e4;
         vertical-align: top; }
th { background: #f4f4f4; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; }
nav a { margin-right: 1.2em; }
"""


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What a run left in its output folder (each part empty when its file is absent)."""
    folder: pathlib.Path
    summary: dict
    errors: pd.DataFrame
    detections: pd.DataFrame   # detections.parquet plus 'species' (the name to show)
    rule: det.DetectionRule | None
    windows: pd.DataFrame      # the windows' source, start_s, end_s, recorded_at

    @classmethod
    def load(cls, folder: pathlib.Path) -> 'RunOutputs':
        run_json = folder / RUN_JSON
        summary = json.loads(run_json.read_text()) if run_json.exists() else {}
        errors_csv = folder / ERRORS_CSV
        errors = pd.read_csv(errors_csv) if errors_csv.exists() else pd.DataFrame()
        detections, rule = _read_detections(folder / det.DETECTIONS_PARQUET)
        return cls(folder, summary, errors, detections, rule, _read_windows(folder))

    @property
    def timed(self) -> pd.DataFrame:
        """Detections in recordings whose names give their start time."""
        return self.detections[self.detections['recorded_at'].notna()]


def _read_detections(path: pathlib.Path) -> tuple[pd.DataFrame, det.DetectionRule | None]:
    if not path.exists():
        return pd.DataFrame(columns=det.SCHEMA.names + ['species']), None
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    rule = None
    if det.MIN_SCORE_KEY in metadata:
        rule = det.DetectionRule(float(metadata[det.MIN_SCORE_KEY]),
                                 int(metadata[det.TOP_K_KEY]))
    frame = table.to_pandas()
    frame['species'] = frame['common_name'].where(frame['common_name'] != '',
                                                  frame['species_code'])
    return frame, rule


def _read_windows(folder: pathlib.Path) -> pd.DataFrame:
    """The windows' metadata only (not the scores), to know when audio was recorded."""
    shards = sorted(folder.glob(f'{WINDOWS_PREFIX}-*.parquet'))
    frames = [pd.read_parquet(shard, columns=_EFFORT_COLUMNS) for shard in shards
              if 'recorded_at' in pq.read_schema(shard).names]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=_EFFORT_COLUMNS)


# ---------------------------------------------------------------------------- HTML pieces

def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    head = ''.join(f'<th>{html.escape(h)}</th>' for h in header) if header else ''
    body = ''.join(
        '<tr>' + ''.join(_cell(value, header is None and i == 0) for i, value in enumerate(row))
        + '</tr>' for row in rows)
    return f'<table>{f"<tr>{head}</tr>" if head else ""}{body}</table>'


def _cell(value: object, is_key: bool) -> str:
    tag = 'th' if is_key else 'td'
    return f'<{tag}>{html.escape(str(value))}</{tag}>'


def _figure(figure: Figure, alt: str, caption: str = '') -> str:
    """The figure as an inline PNG, so the page needs no other file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100, bbox_inches='tight', facecolor='white')
    data = base64.b64encode(buffer.getvalue()).decode('ascii')
    caption_html = f'<figcaption>{html.escape(caption)}</figcaption>' if caption else ''
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f'{caption_html}</figure>')


def _name(source: str) -> str:
    return pathlib.PurePath(source.replace('\\', '/')).name


# ---------------------------------------------------------------------------- run summary

def summary_section(run: RunOutputs) -> str:
    s = run.summary
    if not s:
        return _note(f'{RUN_JSON} not found: the run did not finish, or this is not a '
                     'soundscape-beam output folder.') + _failures(run.errors)
    classes, missing = s.get('classes', []), s.get('missing_classes', [])
    rows = [
        ('Model', s.get('model', {}).get('name', '?')),
        ('Runner', s.get('runner', '?')),
        ('Audio', f'{_duration(s.get("audio_seconds", 0))} in {s.get("files", 0)} files, '
                  f'{s.get("windows", 0)} windows'),
        ('Failed files', _failed_files(run.errors)),
        ('Target classes', f'{len(classes)}: {len(classes) - len(missing)} scored by the '
                           f'model, {len(missing)} missing (scored '
                           f'{s.get("missing_class_score", 0):g})'),
        ('Detections', _detections_summary(run, len(classes))),
        ('Recorder time', _time_summary(run)),
        ('Wall time', f'{s.get("wall_seconds", 0):.1f} s '
                      f'({s.get("x_real_time") or "?"}x real time)'),
    ]
    parts = [_table(rows)]
    if missing:
        parts.append(f'<p><b>Classes the model lacks:</b> {html.escape(", ".join(missing))}</p>')
    return ''.join(parts) + _failures(run.errors)


def _duration(seconds: float) -> str:
    return f'{seconds / 3600:.2f} h' if seconds >= 3600 else f'{seconds / 60:.1f} min'


def _failed_files(errors: pd.DataFrame) -> str:
    if errors.empty:
        return '0'
    kinds = errors.groupby(['stage', 'error']).size()
    detail = ', '.join(f'{count} {stage}/{error}' for (stage, error), count in kinds.items())
    return f'{errors["source"].nunique()} ({detail})'


def _detections_summary(run: RunOutputs, classes: int) -> str:
    if run.rule is None:
        return f'{det.DETECTIONS_PARQUET} not found'
    found = run.detections
    rule = f'score ≥ {run.rule.min_score:g}' + (
        f' or among the window\'s top {run.rule.top_k}' if run.rule.top_k else '')
    if found.empty:
        return f'none ({rule})'
    return (f'{len(found)} ({rule}) of {found["species_code"].nunique()} species, '
            f'out of {classes} target classes')


def _time_summary(run: RunOutputs) -> str:
    windows = run.windows if not run.windows.empty else run.detections
    if windows.empty:
        return 'no windows'
    sources = windows.groupby('source')['recorded_at'].first()
    timed = sources.dropna()
    text = f'{len(timed)} of {len(sources)} recordings have a start time in their name'
    if len(timed):
        text += f', from {timed.min():%Y-%m-%d %H:%M} to {timed.max():%Y-%m-%d %H:%M}'
    return text


def _failures(errors: pd.DataFrame, limit: int = 20) -> str:
    if errors.empty:
        return ''
    rows = [(_name(r.source), r.stage, r.error, r.message)
            for r in errors.head(limit).itertuples()]
    more = (f'<p class="meta">… and {len(errors) - limit} more in {ERRORS_CSV}.</p>'
            if len(errors) > limit else '')
    return ('<h3>Failures</h3>' + _table(rows, ['file', 'stage', 'error', 'message']) + more)


# ---------------------------------------------------------------------------- charts

def heatmap_section(run: RunOutputs) -> str:
    if run.detections.empty:
        return _note('No detections, so no hours to show.')
    timed = run.timed
    if timed.empty:
        return _note('No detection comes from a recording whose file name gives its start '
                     'time (AudioMoth YYYYMMDD_HHMMSS, Song Meter PREFIX_YYYYMMDD_HHMMSS, or '
                     '--timestamp_pattern), so there is no time of day to show.')
    top = timed['species'].value_counts().index[:TOP_SPECIES]
    counts = pd.crosstab(timed['species'], timed['recorded_at'].dt.hour).reindex(
        index=top, columns=range(24), fill_value=0)
    figure = _heatmap(counts, _hours_without_audio(run.windows))
    return _figure(figure, 'Heatmap of detections by species and hour of day',
                   f'Detections per species (top {len(top)} by count) and hour of day, in '
                   'local time at the recorder. White: recorded, nothing detected; '
                   'hatched grey: no audio recorded in that hour.')


def _hours_without_audio(windows: pd.DataFrame) -> np.ndarray:
    """[24] bool: hours of day no window started in (none when no window has a time)."""
    times = pd.to_datetime(windows['recorded_at']).dropna()
    if times.empty:
        return np.zeros(24, dtype=bool)
    return ~np.isin(np.arange(24), times.dt.hour.unique())


def _heatmap(counts: pd.DataFrame, no_audio: np.ndarray) -> Figure:
    figure = Figure(figsize=(11, max(3.2, 1.8 + 0.34 * len(counts))), layout='constrained')
    ax = figure.subplots()
    cmap = matplotlib.colormaps['cividis_r'].with_extremes(under='white')  # 0: none detected
    values = np.ma.masked_array(counts.to_numpy(float), np.broadcast_to(no_audio, counts.shape))
    most = int(counts.to_numpy().max())
    one_colour_per_count = colors.BoundaryNorm(np.arange(0.5, most + 1), cmap.N)
    image = ax.imshow(values, aspect='auto', cmap=cmap, interpolation='nearest',
                      norm=one_colour_per_count)
    for hour in np.flatnonzero(no_audio):
        ax.axvspan(hour - 0.5, hour + 0.5, facecolor='#EEEEEE', edgecolor=GREY, hatch='//',
                   linewidth=0)
    _annotate_counts(ax, counts.to_numpy(), image)
    ax.set_xticks(range(24), [f'{h:02d}' for h in range(24)])
    ax.set_yticks(range(len(counts)), counts.index)
    ax.set_xlabel('Hour of day (local time at the recorder)')
    ax.set_ylabel('Species')
    ax.set_title('Detections by species and hour of day')
    figure.colorbar(image, ax=ax, label='Detections (windows)', fraction=0.03, pad=0.01,
                    ticks=MaxNLocator(integer=True))
    if no_audio.any():
        figure.legend(handles=[Patch(facecolor='#EEEEEE', edgecolor=GREY, hatch='//',
                                     label='No audio recorded in that hour')],
                      loc='outside lower left', frameon=False)
    return figure


def _annotate_counts(ax, counts: np.ndarray, image) -> None:
    """Writes each non-zero count in its cell, dark on light colours and light on dark."""
    for (row, hour), count in np.ndenumerate(counts):
        if count:
            red, green, blue, _ = image.cmap(image.norm(count))
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
            ax.text(hour, row, str(count), ha='center', va='center', fontsize=8,
                    color='black' if light else 'white')


def species_section(run: RunOutputs) -> str:
    if run.detections.empty:
        return _note('No detections: nothing reached --min_score (try a lower one, or '
                     '--top_k 1 for every window\'s best guess).')
    counts = run.detections['species'].value_counts()
    top = counts.iloc[:TOP_SPECIES]
    figure = Figure(figsize=(10, 1.2 + 0.3 * len(top)), layout='constrained')
    ax = figure.subplots()
    bars = ax.barh(range(len(top)), top.to_numpy(), color=BLUE)
    ax.bar_label(bars, padding=3, fontsize=9)
    ax.set_yticks(range(len(top)), top.index)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('Detections (windows)')
    ax.set_ylabel('Species')
    ax.set_title(f'Detections per species (top {len(top)} of {len(counts)})')
    ax.margins(x=0.08)
    ax.spines[['top', 'right']].set_visible(False)
    return _figure(figure, 'Bar chart of detections per species')


def timeline_section(run: RunOutputs) -> str:
    found = run.detections
    if found.empty:
        return _note('No detections, so no timelines.')
    busiest = found['source'].value_counts().index[:TIMELINE_RECORDINGS]
    started = (found['recorded_at'] - pd.to_timedelta(found['start_s'], unit='s')).rename(
        'started').groupby(found['source']).min().loc[busiest].reset_index()
    order = started.sort_values(['started', 'source'], na_position='last')['source'].tolist()
    figure = _timelines(found, order, _durations(run))
    recordings = found['source'].nunique()
    caption = (f'The {len(order)} recordings with the most detections, of {recordings} with '
               f'any, in time order; in each, its {TIMELINE_SPECIES} most detected species. '
               'Each bar is one window, coloured by score.')
    return _figure(figure, 'Timelines of the top species per recording', caption)


def _durations(run: RunOutputs) -> pd.Series:
    """Seconds of audio per recording: its last window's end."""
    windows = run.windows if not run.windows.empty else run.detections
    return windows.groupby('source')['end_s'].max()


def _timelines(found: pd.DataFrame, sources: Sequence[str], durations: pd.Series) -> Figure:
    rows = [min(TIMELINE_SPECIES, found.loc[found['source'] == s, 'species'].nunique())
            for s in sources]
    figure = Figure(figsize=(11, 0.9 * len(sources) + 0.32 * sum(rows) + 0.6),
                    layout='constrained')
    axes = np.atleast_1d(figure.subplots(len(sources), 1, height_ratios=[r + 1.6 for r in rows]))
    cmap = matplotlib.colormaps[SCORES_CMAP]
    for ax, source in zip(axes, sources):
        _timeline(ax, found[found['source'] == source], durations.get(source), cmap)
    axes[-1].set_xlabel('Seconds from the start of the recording')
    figure.supylabel('Species')
    mappable = cm.ScalarMappable(colors.Normalize(0, 1), cmap)
    figure.colorbar(mappable, ax=list(axes), label='Score', location='top', shrink=0.5,
                    aspect=40, pad=0.01)
    figure.suptitle('Top species over time, per recording')
    return figure


def _timeline(ax, found: pd.DataFrame, duration: float | None, cmap) -> None:
    ranked = found.groupby('species')['score'].agg(['size', 'max']).sort_values(
        ['size', 'max'], ascending=False).index[:TIMELINE_SPECIES]
    for row, species in enumerate(ranked):
        windows = found[found['species'] == species]
        ax.broken_barh(list(zip(windows['start_s'], windows['end_s'] - windows['start_s'])),
                       (row - 0.4, 0.8), facecolors=cmap(windows['score'].to_numpy()))
    ax.set_yticks(range(len(ranked)), ranked, fontsize=9)
    ax.set_ylim(len(ranked) - 0.5, -0.5)
    ax.set_xlim(0, duration or found['end_s'].max())
    ax.set_title(_recording_title(found.iloc[0]), fontsize=10, loc='left')


def _recording_title(detection: pd.Series) -> str:
    """The file name, and when and on what it was recorded where its name says."""
    title = _name(detection['source'])
    if pd.notna(detection['recorded_at']):
        started = detection['recorded_at'] - pd.Timedelta(seconds=detection['start_s'])
        title += f'  ·  started {started:%Y-%m-%d %H:%M:%S}'
    if detection['recorder']:
        title += f'  ·  recorder {detection["recorder"]}'
    return title


def scores_section(run: RunOutputs) -> str:
    found = run.detections
    if found.empty:
        return _note('No detections, so no score distributions.')
    top = found['species'].value_counts().index[:DISTRIBUTION_SPECIES]
    samples = [found.loc[found['species'] == species, 'score'].to_numpy() for species in top]
    figure = Figure(figsize=(11, max(2.6, 1.4 + 0.38 * len(top))), layout='constrained')
    ax = figure.subplots()
    boxed = [row for row, scores in enumerate(samples, start=1) if len(scores) >= MIN_BOXED]
    if boxed:
        ax.boxplot([samples[row - 1] for row in boxed], positions=boxed,
                   orientation='horizontal', widths=0.6, showfliers=False,
                   medianprops={'color': BLUE, 'linewidth': 2}, boxprops={'color': '#333333'})
    jitter = np.random.default_rng(0)
    for row, scores in enumerate(samples, start=1):
        ax.scatter(scores, row + jitter.uniform(-0.15, 0.15, len(scores)), s=28, color=ORANGE,
                   alpha=0.8, edgecolors='#333333', linewidths=0.5, zorder=3)
    if run.rule is not None:
        ax.axvline(run.rule.min_score, color='#333333', linestyle='--', linewidth=1,
                   label=f'--min_score {run.rule.min_score:g}')
        figure.legend(loc='outside right upper', fontsize=9, frameon=False)
    ax.set_yticks(range(1, len(top) + 1), top)
    ax.set_ylim(len(top) + 0.5, 0.5)  # the most detected species on top
    ax.set_xlim(0, 1)
    ax.set_xlabel('Score')
    ax.set_ylabel('Species')
    ax.set_title(f'Scores of the detections, per species (top {len(top)} by detections)')
    return _figure(figure, 'Score distribution per species',
                   f'Dots: every detection. Boxes (species with {MIN_BOXED} or more '
                   'detections): quartiles and median; whiskers: 1.5 × IQR.')


# ---------------------------------------------------------------------------- page

SECTIONS = (
    ('summary', 'Run summary', summary_section),
    ('hours', 'Species by hour of day', heatmap_section),
    ('species', 'Detections per species', species_section),
    ('timeline', 'Timelines per recording', timeline_section),
    ('scores', 'Score distribution per species', scores_section),
)


def render(run: RunOutputs) -> str:
    """The whole page as one HTML string."""
    nav = ''.join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in SECTIONS)
    body = ''.join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{make(run)}</section>'
                   for key, title, make in SECTIONS)
    folder = html.escape(str(run.folder))
    generated = datetime.datetime.now().isoformat(timespec='seconds')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>Soundscape report: {folder}</title><style>{_STYLE}</style></head>'
            f'<body><h1>Soundscape report</h1>'
            f'<p class="meta">{folder} · generated {generated}</p><nav>{nav}</nav>'
            f'{body}</body></html>\n')


def write_report(folder: pathlib.Path) -> pathlib.Path:
    """Writes ``folder/report.html`` from the run outputs in ``folder``; returns its path."""
    page = render(RunOutputs.load(folder))
    path = folder / REPORT
    write_atomically(str(path), page.encode('utf-8'))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m pipeline.report',
        description=f'Writes OUTPUT_DIR/{REPORT}, one self-contained page summarising a '
                    'soundscape-beam run.')
    parser.add_argument('output_dir', metavar='OUTPUT_DIR', type=pathlib.Path,
                        help="A run's --output folder (local).")
    folder = parser.parse_args(argv).output_dir
    if not (folder / RUN_JSON).exists() and not (folder / det.DETECTIONS_PARQUET).exists():
        parser.error(f'{folder} holds neither {RUN_JSON} nor {det.DETECTIONS_PARQUET}')
    print(f'Wrote {write_report(folder)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
