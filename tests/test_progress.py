"""Progress lines: what they say, that they are throttled, and that they cost no fusion."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import translations

from pipeline import graph, options
from transforms.progress import ReportProgress
from transforms.records import Shard

SHARD = Shard('a.wav', 16_000, 1, 16_000 * 60, 0, 12)  # 60 s of audio


def test_line_reports_done_rate_and_eta():
    progress = ReportProgress(hop_s=5.0, workers=2)
    progress.setup()
    for _ in range(60):  # this worker's first hour
        progress._audio_s += 60.0  # pylint: disable=protected-access
        progress._shards += 1  # pylint: disable=protected-access
    line = progress.line(elapsed_s=36.0, planned_audio_s=4 * 3600.0)
    # 1 h in 36 s is 100x; 2 h of the 4 remain for 2 workers at 100x each: 36 s.
    assert '60 shards, 1.00 h of audio scored (100x real time)' in line
    assert 'job: 4.00 h planned, ETA 0.6 min' in line


def test_lines_are_throttled(capsys):
    quiet, chatty = ReportProgress(5.0, interval_s=3600.0), ReportProgress(5.0, interval_s=0.0)
    for progress in (quiet, chatty):
        progress.setup()
    for _ in range(3):
        assert list(quiet.process(SHARD, 100.0)) == [SHARD]
    assert capsys.readouterr().err == ''
    for _ in range(3):
        list(chatty.process(SHARD, 100.0))
    assert capsys.readouterr().err.count('shards,') == 3


def test_decoding_inference_and_mapping_stay_in_one_fused_stage(tmp_path):
    """Decoded windows never cross a stage boundary (they would pile up in the launcher)."""
    args, beam_options = options.parse(['--input', 'x.wav', '--output', str(tmp_path)])
    pipeline = beam.Pipeline(options=beam_options)
    graph.build(pipeline, graph.RunConfig.from_args(args))
    stages = next(r for r in translations.create_and_optimize_stages(
        pipeline.to_runner_api(), translations.standard_optimize_phases(), frozenset(),
        use_state_iterables=False) if isinstance(r, list))
    wanted = ('ReadWindows/DecodeWindows/ParDo(DecodeWindows)', 'RunInference/BeamML_RunInference',
              'ToTargetClasses', 'WriteWindows/ToTable',
              'WriteSubmission/Gather/CombinePerKey/Precombine')
    holding = [{t.unique_name for t in stage.transforms} for stage in stages]
    assert any(set(wanted) <= names for names in holding)
