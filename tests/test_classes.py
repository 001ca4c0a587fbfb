"""Target class lists in their three layouts, and the mapping from model labels onto them."""
from __future__ import annotations

import numpy as np
import pytest

from transforms.classes import ClassMapping, ebird_taxonomy, load_classes, parse_classes


def test_default_classes_are_birdclef_2023():
    classes = load_classes()
    assert len(classes) == 264 and classes == sorted(classes)
    assert classes[:3] == ['abethr1', 'abhori1', 'abythr1'] and classes[-1] == 'yewgre1'


@pytest.mark.parametrize('text, expected', [
    ('barswa\ncomsan\n\nabethr1\n', ['barswa', 'comsan', 'abethr1']),
    ('row_id,comsan,barswa\nx_5,0,0\n', ['comsan', 'barswa']),
    ('primary_label,secondary_labels,filename\nbarswa,[],barswa/1.ogg\n'
     'abethr1,"[\'barswa\']",abethr1/2.ogg\nbarswa,[],barswa/3.ogg\n', ['abethr1', 'barswa']),
])
def test_three_layouts(text, expected):
    assert parse_classes(text) == expected


def test_a_file_from_disk(tmp_path):
    path = tmp_path / 'sample_submission.csv'
    path.write_text('\ufeffrow_id,b,a\n')  # a byte-order mark as spreadsheet tools write it
    assert load_classes(str(path)) == ['b', 'a']


@pytest.mark.parametrize('text, message', [('', 'no class codes'), ('a\nb\na\n', 'duplicate')])
def test_bad_lists_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_classes(text, 'classes.txt')


def test_mapping_gathers_by_label_and_fills_missing():
    mapping = ClassMapping.build(['c', 'a', 'zz'], ['a', 'b', 'c'], missing_score=0.5)
    assert mapping.index.tolist() == [2, 0, -1] and mapping.missing == ['zz']
    logits = np.array([0.0, 3.0, -2.0], dtype=np.float32)
    np.testing.assert_allclose(mapping.scores(logits),
                               [1 / (1 + np.exp(2.0)), 0.5, 0.5], rtol=1e-6)


def test_sigmoid_is_birdnets_flat_sigmoid():
    mapping = ClassMapping.build(['a', 'b', 'c'], ['a', 'b', 'c'], sensitivity=1.5)
    got = mapping.scores(np.array([40.0, -1.0, 0.2], dtype=np.float32))
    want = 1 / (1 + np.exp(-1.5 * np.clip([40.0, -1.0, 0.2], -15, 15)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    plain = ClassMapping.build(['a'], ['a']).scores(np.array([1e4], dtype=np.float32))
    assert 0.9999 < plain[0] < 1.0  # clipped at 15: never exactly 1


def test_softmax_normalises_over_all_model_labels():
    mapping = ClassMapping.build(['b'], ['a', 'b', 'c'], activation='softmax')
    logits = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(mapping.scores(logits), [np.exp(2) / np.exp(logits).sum()],
                               rtol=1e-6)


def test_taxonomy_maps_both_ways():
    taxonomy = ebird_taxonomy()
    assert taxonomy['Hirundo rustica_Barn Swallow'] == 'barswa'
    assert taxonomy['barswa'] == 'Hirundo rustica_Barn Swallow'


@pytest.mark.parametrize('options', [{'activation': 'relu'}, {'missing_score': 1.5}])
def test_bad_mapping_options_are_refused(options):
    with pytest.raises(ValueError):
        ClassMapping.build(['a'], ['a'], **options)
