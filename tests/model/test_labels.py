import json

import pytest

from aduan.model.labels import LabelSet


def test_labels_sorted_and_round_trip_through_json():
    labels = LabelSet.from_values(["b", "a", "c", "a"])
    assert labels.labels == ("a", "b", "c")
    assert labels.label2id == {"a": 0, "b": 1, "c": 2}
    again = LabelSet.from_json(json.loads(json.dumps(labels.to_json())))
    assert again == labels


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"id2label": {}},
        {"id2label": {"0": "a", "2": "b"}},
        {"id2label": {"0": "a", "1": "b"}, "label2id": {"a": 1, "b": 0}},
    ],
)
def test_labels_refuse_broken_maps(bad):
    with pytest.raises(ValueError):
        LabelSet.from_json(bad)
