import pytest

from aduan.model.location import Gazetteer, LocationResolver, StreetIndex, tokens

GAZ = Gazetteer(
    [
        ("Keputran", "Tegalsari"),
        ("Baratajaya", "Gubeng"),
        ("Ngagel", "Wonokromo"),
        ("Jemur Wonosari", "Wonocolo"),
        ("Genteng", "Genteng"),
    ]
)


def test_location_tokens_expand_abbreviations():
    assert tokens("Jl. Ngagel Jaya no.5 Kel. Baratajaya") == [
        "jalan",
        "ngagel",
        "jaya",
        "no",
        "kelurahan",
        "baratajaya",
    ]


def test_location_explicit_mentions_win():
    resolver = LocationResolver(GAZ)
    unit = resolver.resolve("Jl. Ngagel Jaya 5 kel. barata jaya kec. gubeng")
    assert unit is not None and unit.to_dict() == {"kelurahan": "Baratajaya", "kecamatan": "Gubeng"}


def test_location_fuzzy_and_compact_gazetteer_names():
    resolver = LocationResolver(GAZ)
    assert resolver.resolve("rumah di jemurwonosari gang 3").kelurahan == "Jemur Wonosari"
    assert resolver.resolve("kelurahan keputrann").kelurahan == "Keputran"


def test_location_learned_streets_beat_misleading_names():
    """'Ngagel Jaya Tengah' lies in Baratajaya, not in kelurahan Ngagel: learned from data."""
    rows = [
        ("Jalan Ngagel Jaya Tengah no 10", "Baratajaya"),
        ("ngagel jaya tengah dekat bengkel", "Baratajaya"),
        ("Jl Ngagel Jaya Tengah 77", "Baratajaya"),
    ]
    resolver = LocationResolver(GAZ, StreetIndex.learn(rows, GAZ))
    assert (
        LocationResolver(GAZ).resolve("jalan Ngagel Jaya Tengah dekat bengkel").kelurahan
        == "Ngagel"
    )
    unit = resolver.resolve("jalan Ngagel Jaya Tengah dekat bengkel")
    assert unit.to_dict() == {"kelurahan": "Baratajaya", "kecamatan": "Gubeng"}


def test_location_falls_back_to_text_and_gives_none_when_unknown():
    resolver = LocationResolver(GAZ)
    assert resolver.resolve(None, "sampah menumpuk di genteng").kecamatan == "Genteng"
    assert resolver.resolve("", "tidak ada petunjuk lokasi") is None


def test_location_index_round_trips_json():
    index = StreetIndex.learn([("Jalan Tunjungan 5", "Genteng")], GAZ)
    assert StreetIndex.from_json(index.to_json()).grams == index.grams


def test_location_gazetteer_file_is_validated(tmp_path):
    bad = tmp_path / "g.csv"
    bad.write_text("desa,kota\nA,B\n")
    with pytest.raises(ValueError, match="kelurahan, kecamatan"):
        Gazetteer.load(bad)
