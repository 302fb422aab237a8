"""`ADUAN_LENGTH_BUCKETS`: the served transformer runs its batches in length buckets, or (false)
each batch as one call padded to its longest text."""

from __future__ import annotations


def test_the_service_setting_turns_the_buckets_off(tiny_transformer, gazetteer_csv, tmp_path):
    from aduan.service.settings import Settings
    from aduan.service.state import ServiceState

    for buckets in (True, False):
        settings = Settings(
            model_dir=tiny_transformer,
            gazetteer=gazetteer_csv,
            data_dir=tmp_path / "var",
            length_buckets=buckets,
            engine="torch",
        )
        pipeline = ServiceState(settings)._load_pipeline(tiny_transformer)
        assert pipeline.classifier.backend.length_buckets is buckets
