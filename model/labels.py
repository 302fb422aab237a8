"""Ordered label lists per prediction head, with id2label/label2id and a JSON round-trip."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HEADS = ("category", "agency")


@dataclass(frozen=True)
class LabelSet:
    """The classes of one head, in a fixed sorted order shared by every artifact."""

    labels: tuple[str, ...]

    @classmethod
    def from_values(cls, values: Iterable[str]) -> LabelSet:
        """Build a label set from every value seen (all splits), sorted."""
        return cls(tuple(sorted(set(values))))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def to_json(self) -> dict[str, Any]:
        # JSON object keys are strings, as in transformers' config.json.
        return {
            "id2label": {str(i): label for i, label in self.id2label.items()},
            "label2id": self.label2id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelSet:
        """Rebuild from `to_json` output; refuses maps that are not a dense 0..n-1 range."""
        id2label = data.get("id2label")
        if not isinstance(id2label, Mapping) or not id2label:
            raise ValueError("id2label is missing or empty")
        ids = sorted(int(i) for i in id2label)
        if ids != list(range(len(ids))):
            raise ValueError("id2label ids are not 0..n-1")
        labels = tuple(str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in ids)
        label2id = data.get("label2id")
        if label2id is not None and dict(label2id) != {label: i for i, label in enumerate(labels)}:
            raise ValueError("label2id does not match id2label")
        return cls(labels)
