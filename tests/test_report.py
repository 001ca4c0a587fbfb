"""The HTML report: self-contained, complete, and rendered by a real headless browser."""
from __future__ import annotations

import base64
import html.parser
import io
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline import report
from tests.detection_fixtures import run_dc, write_levels
from transforms.detections import DetectionRule

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
OKABE_ITO_BLUE = (0x00, 0x72, 0xB2)  # the bar chart's colour
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


class Page(html.parser.HTMLParser):
    """The parts of a page the tests look at: images, section headings, notes, links."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.headings: list[str] = []
        self.external: list[str] = []
        self._heading = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'img':
            self.images.append(attrs)
        self._heading = tag == 'h2'
        if tag in ('script', 'link', 'iframe') or any(
                (attrs.get(a) or '').startswith(('http:', 'https:', '//', 'file:'))
                for a in ('src', 'href')):
            self.external.append(f'{tag} {attrs}')

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data)
            self._heading = False


def _png_sizes(page: Page) -> list[tuple[int, int, int]]:
    """(bytes, width, height) of each inline image; fails on anything but a data: PNG."""
    sizes = []
    for image in page.images:
        prefix, _, data = image['src'].partition(',')
        assert prefix == 'data:image/png;base64', prefix[:40]
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(raw)) as decoded:
            sizes.append((len(raw), *decoded.size))
    return sizes


@pytest.fixture(scope='module')
def outputs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Three runs: timed names with a failure, names without time, and nothing detected."""
    root = tmp_path_factory.mktemp('report')
    audio = root / 'audio'
    audio.mkdir()
    timed = [write_levels(audio / 'S4A00001_20240102_030000.wav', [0.75, 0.25]),
             write_levels(audio / 'S4A00001_20240102_050000.wav', [0.25, 0.5]),
             write_levels(audio / 'S4A00001_20240102_230000.wav', [0.75])]
    broken = audio / 'S4A00001_20240102_120000.wav'
    broken.write_bytes(b'RIFF' + bytes(40))
    runs = {'timed': root / 'timed', 'untimed': root / 'untimed', 'empty': root / 'empty'}
    run_dc([*timed, broken], runs['timed'])
    run_dc([write_levels(audio / 'rec_a.wav', [0.75, 0.25])], runs['untimed'])
    run_dc([write_levels(audio / 'rec_b.wav', [0.75])], runs['empty'],
           detection_rule=DetectionRule(1.0, 0))
    for folder in runs.values():
        report.write_report(folder)
    return runs


def _page(folder: pathlib.Path) -> tuple[str, Page]:
    text = (folder / report.REPORT).read_text(encoding='utf-8')
    return text, Page(text)


def test_report_summarises_the_run_and_draws_every_chart(outputs):
    text, page = _page(outputs['timed'])
    assert page.headings == ['Run summary', 'Species by hour of day', 'Detections per species',
                             'Timelines per recording', 'Score distribution per species']
    assert page.external == [] and 'http' not in text and '<script' not in text
    sizes = _png_sizes(page)
    assert len(sizes) == 4
    assert all(size > 5_000 and width > 400 and height > 150 for size, width, height in sizes)
    assert [image['alt'] for image in page.images] == [
        'Heatmap of detections by species and hour of day',
        'Bar chart of detections per species', 'Timelines of the top species per recording',
        'Score distribution per species']
    # 25 s of audio in 3 files; the truncated WAV failed; 6 detections of 2 species.
    assert '0.4 min in 3 files, 5 windows' in text
    assert '<th>Failed files</th><td>1 (1 plan/' in text
    assert '4: 3 scored by the model, 1 missing (scored 0)' in text
    assert 'Classes the model lacks:</b> absent1' in text
    assert '6 (score ≥ 0.5) of 2 species, out of 4 target classes' in text
    assert ('3 of 3 recordings have a start time in their name, from 2024-01-02 03:00 to '
            '2024-01-02 23:00') in text
    assert 'S4A00001_20240102_120000.wav' in text  # the failures table


def test_report_without_recorder_time_says_so(outputs):
    text, page = _page(outputs['untimed'])
    assert len(_png_sizes(page)) == 3
    assert 'no time of day to show' in text
    assert '0 of 1 recordings have a start time in their name' in text


def test_report_without_detections_has_notes_not_charts(outputs):
    text, page = _page(outputs['empty'])
    assert page.images == []
    assert 'none (score ≥ 1)' in text
    assert text.count('class="note"') == 4
    assert 'No detections: nothing reached --min_score' in text


def test_command_line(outputs, tmp_path, capsys):
    (outputs['empty'] / report.REPORT).unlink()
    assert report.main([str(outputs['empty'])]) == 0
    assert (outputs['empty'] / report.REPORT).exists()
    assert str(outputs['empty'] / report.REPORT) in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([str(tmp_path)])
    assert 'holds neither run.json nor detections.parquet' in capsys.readouterr().err


def _browser() -> str:
    """A headless Chromium; skipped where there is none, except in CI, where it must be."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = ('no Chromium or Chrome on PATH to render the report '
              '(Debian/Ubuntu: apt-get install chromium)')
    if os.environ.get('CI'):
        pytest.fail(reason)
    pytest.skip(reason)


def _headless(browser: str, profile: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, '--headless', '--no-sandbox', '--disable-gpu',
         '--disable-background-networking', f'--user-data-dir={profile}', *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize('name, images', [('timed', 4), ('untimed', 3), ('empty', 0)])
def test_a_real_browser_renders_the_report(outputs, tmp_path, name, images):
    browser = _browser()
    url = (outputs[name] / report.REPORT).as_uri()
    dom = _headless(browser, tmp_path / 'profile-dom', '--dump-dom', url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)
    assert page.headings[0] == 'Run summary' and len(page.headings) == 5
    assert len(_png_sizes(page)) == images

    screenshot = tmp_path / 'report.png'
    shot = _headless(browser, tmp_path / 'profile-shot', f'--screenshot={screenshot}',
                     '--window-size=1280,4000', url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert('RGB')).reshape(-1, 3).astype(int)
    assert pixels.shape[0] == 1280 * 4000
    blue = np.abs(pixels - OKABE_ITO_BLUE).sum(axis=1) < 30
    if images:  # the bar chart was decoded and drawn, not a broken-image icon
        assert blue.sum() > 2_000
    else:
        assert blue.sum() < 200
